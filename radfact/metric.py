"""RadFact as a bench metric ("radfact" in `bench run` / `bench score`).

Options (`--metric-opt radfact.KEY=VALUE`, validated by `RadFactMetric.Options`):
    judge      an LLM spec as in docs/llm.md, e.g. openai:http://gpu:8000/v1 (several
               comma-separated URLs share the load), or @llm.toml[#NAME] (an endpoint file:
               its `radfact` use; a managed server is started for the scoring and stopped
               after it); required: without it the metric is unavailable (offline default)
    model      the model the judge serves, e.g. meta-llama/Meta-Llama-3-70B-Instruct
    mode       faithful (default; one call per phrase, as the reference) | batched
    cache      SQLite response cache (default: <cache root>/llm/responses.sqlite)
    concurrency  requests in flight (default 16)
    phrase_examples, entailment_examples  few-shot files (ours or microsoft/RadFact's)
    n_phrase_examples, n_entailment_examples  keep only the first n examples
    timeout    seconds per LLM attempt (default 300)
    progress   show progress bars (default true)
    probe      check the judge in `check()` (default true)

Failures are never scores. `check()` probes the judge before anything is generated and
raises MetricUnavailable when it cannot answer (refused connection, unknown host, key
rejected, model not served). During `per_sample` a study whose requests got no answer
after the client's retries is marked failed (`radfact_failed`) with neutral statistics;
if the judge answered no study at all the metric is unavailable. Answers that came back
but could not be read count as not entailed (the reference's convention) and are reported
by `failures()`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
import pandas as pd
from pydantic import Field

from bench.errors import MetricUnavailable
from bench.llm.judge import check_judge, judge_client, judge_model, no_judge
from bench.llm.servers import judge_serving
from bench.metrics.base import Metric
from bench.options import OptionsModel, validate_options
from radfact.evaluate import RadFactConfig, Study, StudyResult, evaluate
from radfact.scores import PREFIX, aggregate_totals, is_failed, sufficient_statistics

if TYPE_CHECKING:
    from bench.llm import LLMClient

log = logging.getLogger(__name__)

REMEDY = ("pass --metric-opt radfact.judge=openai:URL --metric-opt radfact.model=NAME "
          "(see docs/radfact.md for serving Llama-3-70B-Instruct with vLLM)")
REMEDY_DOWN = "check that the judge server is up and serves the model, then run again (answers already given are cached)"
USE = "radfact"  # this metric's name in an endpoint file's [uses] table


def raise_if_unanswered(results: Sequence[StudyResult], judge: str | None) -> None:
    """MetricUnavailable when studies failed and the judge answered none of the others either.

    Then there is nothing to report but the judge's failure (scores from the few studies
    that needed no call, empty reports say, would stand for the whole set)."""
    failed = [r for r in results if r.failed]
    if failed and not any(r.score.judgements for r in results if not r.failed):
        raise MetricUnavailable(f"judge {judge} answered no study ({len(failed)} of {len(results)} failed; "
                                f"first error: {failed[0].error})", REMEDY_DOWN)


class RadFactMetric(Metric):
    name = "radfact"
    columns = (f"{PREFIX}_f1",)  # the paper's table shows F1; precision, recall, counts stay in aggregate()
    headers = {f"{PREFIX}_f1": "RadFact F1"}
    version = "2"  # 2: a request the judge did not answer fails its study instead of counting as not entailed
    description = ("RadFact (Bannur et al. 2024): LLM report->phrases, then entailment of each candidate phrase "
                   "against the reference phrases (logical precision) and of each reference phrase against the "
                   "candidate phrases (logical recall); per-study fractions, NaN-aware means over studies, "
                   "F1 of the two means; unparseable answers not entailed; studies with unmatched evidence dropped; "
                   "studies the judge did not answer failed, never scored")
    llm_option = "judge"  # `--endpoints FILE` gives it @FILE when the file's [uses] names radfact
    llm_use = USE

    class Options(OptionsModel):
        judge: str | None = None  # LLM spec (docs/llm.md); None: unavailable
        model: str | None = None  # the model the judge serves
        mode: Literal["faithful", "batched"] = "faithful"
        cache: Path | None = None  # response cache file; None: <cache root>/llm/responses.sqlite
        concurrency: int = Field(16, ge=1)  # requests in flight, over all endpoints
        phrase_examples: Path | None = None  # few-shot file (ours or microsoft/RadFact's); None: ours
        entailment_examples: Path | None = None
        n_phrase_examples: int | None = Field(None, ge=0)  # keep the first n examples
        n_entailment_examples: int | None = Field(None, ge=0)
        timeout: float = Field(300.0, gt=0)  # seconds per LLM attempt
        progress: bool = True
        probe: bool = True  # check the judge in check(); false e.g. to re-score from the cache alone

    def __init__(self, judge: str | None = None, model: str | None = None, mode: str = "faithful",
                 cache: str | Path | None = None, concurrency: int | str = 16,
                 phrase_examples: str | Path | None = None, entailment_examples: str | Path | None = None,
                 n_phrase_examples: int | str | None = None, n_entailment_examples: int | str | None = None,
                 timeout: float | str = 300.0, progress: bool | str = True, probe: bool | str = True, *,
                 client: "LLMClient | None" = None):
        """Keyword arguments as the options (strings accepted, validated the same way).

        `client`: a ready LLMClient to judge with instead of one built from `judge`/`model`
        (library use and tests: own retries, backoff, cache mode)."""
        opts = validate_options(self.Options, {
            "judge": judge, "model": model, "mode": mode, "cache": cache, "concurrency": concurrency,
            "phrase_examples": phrase_examples, "entailment_examples": entailment_examples,
            "n_phrase_examples": n_phrase_examples, "n_entailment_examples": n_entailment_examples,
            "timeout": timeout, "progress": progress, "probe": probe}, f"metric {self.name}")
        self.opts = opts
        self.judge = (opts.judge or "").strip() or None
        self.model = opts.model or None
        self.cache = opts.cache
        self.concurrency = opts.concurrency
        self.timeout = opts.timeout
        self.progress = opts.progress
        self.probe = opts.probe
        self.cfg = RadFactConfig(mode=opts.mode, phrase_examples=opts.phrase_examples,
                                 entailment_examples=opts.entailment_examples,
                                 n_phrase_examples=opts.n_phrase_examples,
                                 n_entailment_examples=opts.n_entailment_examples)
        self._client = client
        if client is None:
            self.model = judge_model(self.judge, self.model, USE)  # an endpoint file names it
        if client is not None and self.judge is None:
            self.judge = f"{client.backend.kind}:{client.backend.model}"

    # -- the judge ---------------------------------------------------------------
    def cache_path(self) -> Path:
        """The response cache: the `cache` option, else <cache root>/llm/responses.sqlite."""
        return self.cache if self.cache is not None else self.resolved_cache_root() / "llm" / "responses.sqlite"

    def check(self) -> None:
        """MetricUnavailable unless the judge can answer; within seconds, before any generation.

        A malformed judge spec stays a BenchError: it is the user's typo, not the machine's state."""
        if self._client is None and not no_judge(self.judge):
            from bench.llm import parse_spec

            parse_spec(self.judge or "", self.model, USE)
        check_judge(self.client(), self.probe)

    def client(self) -> "LLMClient":
        """The judge's client, built on first use (nothing is sent to the judge here)."""
        if self._client is None:
            self._client = judge_client(self.judge, self.model, USE, REMEDY, self.cache_path(),
                                        concurrency=self.concurrency, timeout=self.timeout)
        return self._client

    # -- scoring -----------------------------------------------------------------
    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        """One row per study. A study the judge did not answer has `radfact_failed` True and
        neutral statistics; if the judge answered nothing at all, MetricUnavailable."""
        studies = [Study(str(i), reference=r, prediction=p) for i, (r, p) in enumerate(zip(references, predictions))]
        client = self.client()
        with judge_serving(client, self.judge):
            results = evaluate(studies, client, self.cfg, progress=self.progress)
        raise_if_unanswered(results, self.judge)
        rows = pd.DataFrame([r.score.row() for r in results])
        assert self.failed_column() in rows.columns or not len(rows)
        return rows

    # AdditiveMetric: the bootstrap resamples sums of these rows (bench.stats.aggregators).
    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        return sufficient_statistics(rows.to_dict("records"))

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        return aggregate_totals(totals)

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        """Corpus values; failed rows contribute nothing (their statistics are zero)."""
        return {k: float(v) for k, v in aggregate_totals(self.sufficient_statistics(rows).sum(0)).items()}

    def failures(self, rows: pd.DataFrame) -> dict[str, Any] | None:
        """Judge answers that came back but could not be read, of all answers the scored studies used.

        Counted from the per-sample columns radfact_unparseable and radfact_judgements (report
        phrasings plus entailment verdicts); failed studies have neither."""
        need = (f"{PREFIX}_unparseable", f"{PREFIX}_judgements")
        if any(c not in rows.columns for c in need):
            return None
        records = rows.to_dict("records")
        kept = [r for r in records if not is_failed(r)]
        return {"failed": int(sum(int(r[need[0]]) for r in kept)), "of": int(sum(int(r[need[1]]) for r in kept)),
                "what": "judge answers that could not be parsed"}

    def signature_settings(self) -> dict:
        return {"judge": self.model or "(unnamed)", "mode": self.cfg.mode, "prompts": self.prompts_hash()}

    def prompts_hash(self) -> str:
        """A short hash of every prompt text and few-shot example the judge is shown."""
        import hashlib
        import json

        from radfact.entailment import EntailmentPrompts
        from radfact.phrases import PhrasePrompts

        pp = PhrasePrompts.load(self.cfg.phrase_examples, self.cfg.n_phrase_examples)
        ep = EntailmentPrompts.load(self.cfg.entailment_examples, self.cfg.n_entailment_examples)
        blob = json.dumps([repr(pp), repr(ep)], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def config(self) -> dict:
        out = {"name": self.name, "version": self.version, "description": self.description, "judge": self.judge,
               "model": self.model, **self.cfg.describe()}
        if self._client is not None:
            out["llm"] = self._client.manifest()
        return out
