"""`bench radfact --predictions FILE --judge openai:URL --model NAME`: RadFact on its own.

Mounted by bench/cli.py as `app.command("radfact")(radfact_command)`; also runs as
`python -m radfact.cli --predictions FILE ...`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd
import typer

from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.llm import LLMClient

log = logging.getLogger(__name__)


def radfact_command(
    predictions: Path = typer.Option(..., "--predictions", "-p",
                                     help="JSONL of {id, reference, prediction} (or *_phrases lists), "
                                          "or microsoft/RadFact's test-example JSON"),
    judge: str = typer.Option(..., "--judge", help="LLM spec: openai:URL[,URL...] | anthropic | gguf[:PATH] | @ENDPOINTS.toml[#NAME]"),
    model: Optional[str] = typer.Option(None, "--model", help="model name the judge serves"),
    mode: str = typer.Option("faithful", help="faithful (one call per phrase, as the reference) | batched"),
    out: Optional[Path] = typer.Option(None, "--out", help="write per-study phrases, verdicts and scores (JSONL)"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir",
                                             help="cache root; the response cache is CACHE_DIR/llm/responses.sqlite "
                                                  "(default: the bench cache root, $SAERAD_BENCH_CACHE or "
                                                  "~/.cache/saerad-bench)"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="response cache file (overrides --cache-dir)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the response cache"),
    concurrency: int = typer.Option(16, help="LLM requests in flight"),
    timeout: float = typer.Option(300.0, help="seconds per LLM attempt"),
    phrase_examples: Optional[Path] = typer.Option(None, help="few-shot file for report->phrases (ours or microsoft/RadFact's)"),
    entailment_examples: Optional[Path] = typer.Option(None, help="few-shot file for entailment (ours or microsoft/RadFact's)"),
    n_phrase_examples: Optional[int] = typer.Option(None, help="use only the first n phrase examples"),
    n_entailment_examples: Optional[int] = typer.Option(None, help="use only the first n one-way entailment examples"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples (0: none)"),
    seed: int = typer.Option(0, help="bootstrap seed"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout"),
) -> None:
    """Score predictions with RadFact: LLM phrases, entailment both ways, logical precision/recall/F1.

    The judge is probed first: an unreachable server, a rejected key or a model it does not
    serve is a one-line error (exit code 2) before any request. Studies the judge does not
    answer are reported as failed and left out of the scores."""
    try:
        summary = run_radfact(predictions, judge, model, mode, out, None if no_cache else (cache or "default"),
                              concurrency, timeout, phrase_examples, entailment_examples, n_phrase_examples,
                              n_entailment_examples, bootstrap, seed, cache_dir=cache_dir)
    except BenchError as exc:  # MetricUnavailable included: one line, exit code 2, as the bench CLI does
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print(summary)


def run_radfact(predictions: Path, judge: str, model: str | None, mode: str = "faithful", out: Path | None = None,
                cache: Path | str | None = "default", concurrency: int = 16, timeout: float = 300.0,
                phrase_examples: Path | None = None, entailment_examples: Path | None = None,
                n_phrase_examples: int | None = None, n_entailment_examples: int | None = None,
                bootstrap: int = 1000, seed: int = 0, progress: bool = True, *,
                cache_dir: Path | None = None, client: "LLMClient | None" = None) -> dict:
    """The library function behind the command: scores, counts, intervals, LLM usage.

    cache: "default" (<cache_dir>/llm/responses.sqlite, cache_dir defaulting to the bench
    cache root), a file, or None for no cache. `client`: a ready LLMClient to judge with
    (then judge/model/cache only label the summary). Raises MetricUnavailable when the judge
    cannot answer (probed first) or answered no study; failed studies are counted and left
    out of the values and intervals."""
    from bench.llm import make_client
    from bench.stats import bootstrap as bootstrap_fn
    from radfact.evaluate import evaluate
    from radfact.io import read_studies, write_results
    from radfact.metric import RadFactMetric, raise_if_unanswered

    studies = read_studies(predictions)
    if client is None and judge.strip().lower() == "none":
        raise BenchError("--judge none cannot score RadFact; give an LLM, e.g. --judge openai:http://host:8000/v1 "
                         "--model NAME")
    if client is None and cache is None:  # --no-cache: a client with no response cache
        client = make_client(judge, model, None, max_concurrency=concurrency, timeout=timeout, use="radfact")
    metric = RadFactMetric(judge=judge, model=model, mode=mode, cache=None if cache == "default" else cache,
                           concurrency=concurrency, timeout=timeout, phrase_examples=phrase_examples,
                           entailment_examples=entailment_examples, n_phrase_examples=n_phrase_examples,
                           n_entailment_examples=n_entailment_examples, progress=progress, client=client)
    metric.attach_cache(cache_dir)  # None: the bench cache root
    metric.check()  # probes the judge: MetricUnavailable before any request is made
    llm = metric.client()
    try:
        with llm.serving():  # a managed judge (endpoint file) runs for this block only
            results = evaluate(studies, llm, metric.cfg, progress=progress)
    finally:
        llm.close()
    if out is not None:
        write_results(results, out)
    raise_if_unanswered(results, judge)
    failed = [r for r in results if r.failed]
    rows = pd.DataFrame([r.score.row() for r in results])
    # Failed studies are counted, never scored: values and intervals come from the others.
    scored = rows[~rows[metric.failed_column()].astype(bool)].reset_index(drop=True)
    values = metric.aggregate(scored)
    summary: dict = {"n_studies": len(studies), "n_scored": len(scored), "n_failed": len(failed),
                     "failed_ids": [r.id for r in failed], "first_failure": failed[0].error if failed else None,
                     "values": values, "failures": metric.failures(scored), "config": metric.cfg.describe(),
                     "judge": judge, "model": model}
    if bootstrap > 0:
        iv = bootstrap_fn(metric, scored, n_resamples=bootstrap, seed=seed)
        summary["intervals"] = {k: {"median": iv[k].median, "low": iv[k].low, "high": iv[k].high}
                                for k in ("radfact_f1", "radfact_precision", "radfact_recall")}
    usage = llm.usage.as_dict()
    summary["llm"] = llm.manifest()
    # Cost of this run per study: what was paid now plus what the cache saved.
    calls = usage["calls"] + usage["cache_hits"]
    tokens = usage["prompt_tokens"] + usage["cached_prompt_tokens"]
    summary["cost_per_study"] = {"requests": calls / len(studies), "prompt_tokens": tokens / len(studies)}
    return summary


def _print(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    v = summary["values"]
    t = Table(title=f"RadFact ({summary['config']['mode']}, {summary['n_studies']} studies, judge {summary['model']})")
    for c in ("", "value", "median", "95% interval"):
        t.add_column(c)
    for k in ("radfact_f1", "radfact_precision", "radfact_recall"):
        iv = summary.get("intervals", {}).get(k)
        val = "nan" if math.isnan(v[k]) else f"{100 * v[k]:.1f}"
        t.add_row(k.removeprefix("radfact_"), val, f"{100 * iv['median']:.1f}" if iv else "",
                  f"{100 * iv['low']:.1f} - {100 * iv['high']:.1f}" if iv else "")
    Console().print(t)
    if summary["n_failed"]:
        Console().print(f"[yellow]{summary['n_failed']} of {summary['n_studies']} studies failed[/yellow] (the judge "
                        f"gave no answer; left out of the scores; first error: {summary['first_failure']})")
    f = summary["failures"] or {"failed": 0, "of": 0}
    Console().print(f"unparseable judge answers {f['failed']} of {f['of']}; "
                    f"LLM failures {int(v['radfact_llm_failures'])}, phrase rewrites {int(v['radfact_phrase_rewrites'])}, "
                    f"invalid studies {int(v['radfact_invalid_studies'])} (phrasing failures "
                    f"{int(v['radfact_phrase_failures'])}); per study: "
                    f"{summary['cost_per_study']['requests']:.1f} requests, "
                    f"{summary['cost_per_study']['prompt_tokens']:.0f} prompt tokens")


app = typer.Typer(add_completion=False)
app.command("radfact")(radfact_command)

if __name__ == "__main__":
    app()
