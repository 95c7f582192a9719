"""Benchmark: BERTScore, ours vs the bert-score package (0.3.13), side by side in one process.

Both score the same pairs with the same random checkpoint of distilroberta-base's architecture
(RoBERTa, 6 layers, 768 wide, 12 heads; byte-level BPE vocabulary trained on the reports; layer 5
as the field uses), on the same torch threads. Scores are compared before any time is reported
(raw P, R, F: no rescaling, which is the same formula on both sides). In the same run:

- reference: `BERTScorer.score(cands, refs)` with the package's defaults (batch size 64);
- ours: a fresh metric (nothing cached) scoring the same pairs;
- re-score: the same metric scoring another system's predictions against the same references
  (the references' embeddings are reused), beside the package scoring those pairs from scratch.

Pairs: the embedded default dataset's test references (phantom reports, generated on first use)
against predictions written for other images (training findings), so lengths and overlap vary
as in a real run. Each side runs `--repeats` times, interleaved; the fastest run counts.

    python benchmarks/bertscore_speed.py [--n-pairs 200] [--size distilroberta|tiny] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench.metrics.bertscore import BertScoreMetric  # noqa: E402
from helpers.bertscore_reference import reference_scorer, reference_scores  # noqa: E402
from helpers.tiny_text_models import write_tiny_roberta  # noqa: E402

SIZES = {"distilroberta": (768, 6, 3072), "tiny": (64, 3, 128)}
LAYER = 5


def phantom_pairs(n: int) -> tuple[list[str], list[str], list[str]]:
    """(references, predictions of one system, predictions of another): test findings against
    training findings, as a retrieval system would write them."""
    from bench.data.default import embedded_default_root
    from bench.data.mimic import load_split

    root = embedded_default_root()
    test = [s.findings for s in load_split(root, "test").samples[:n]]
    if len(test) < n:
        raise SystemExit(f"--n-pairs {n}: the embedded default's test split has {len(test)} reports")
    train = [s.findings for s in load_split(root, "train").samples]
    return test, train[:n], train[n:2 * n]


def gemm_floor_seconds(model: torch.nn.Module, n_tokens: int, repeats: int) -> float:
    """The truncated encoder's linear layers alone over `n_tokens` rows, one product per weight
    matrix: no padding, no attention, no normalisation, no tokenising. Every exact float32
    forward pass over these texts does at least these products, so no implementation on this
    machine's matrix unit can be faster than this."""
    linears = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {m.in_features: torch.randn(n_tokens, m.in_features) for m in linears}
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for m in linears:
                torch.nn.functional.linear(inputs[m.in_features], m.weight, m.bias)
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-pairs", type=int, default=200)
    ap.add_argument("--size", choices=sorted(SIZES), default="distilroberta")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None, help="ours: texts per forward pass (default: the metric's)")
    ap.add_argument("--batch-tokens", type=int, default=None, help="ours: padded tokens per forward pass")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    refs, cands, cands2 = phantom_pairs(args.n_pairs)
    hidden, layers, intermediate = SIZES[args.size]
    layer = min(LAYER, layers)
    times: dict[str, list[float]] = {"reference": [], "ours": [], "reference_rescore": [], "ours_rescore": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_roberta(Path(tmp) / "model", refs + cands + cands2, hidden=hidden, layers=layers,
                                   intermediate=intermediate, vocab_size=8000, initializer_range=0.02)
        ref = reference_scorer(model, layer)
        expected = reference_scores(ref, refs, cands)  # also the warm-up
        expected2 = reference_scores(ref, refs, cands2)

        def fresh() -> BertScoreMetric:
            sizes = {k: v for k, v in (("batch_size", args.batch_size), ("batch_tokens", args.batch_tokens)) if v}
            return BertScoreMetric(model=str(model), num_layers=layer, rescale_with_baseline=False, pair_cache=False,
                                   **sizes)

        fresh().per_sample(refs[:8], cands[:8])  # warm-up of our side
        diffs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            got_ref = reference_scores(ref, refs, cands)
            times["reference"].append(time.perf_counter() - t0)
            metric = fresh()
            t0 = time.perf_counter()
            got = metric.per_sample(refs, cands)[["bertscore_p", "bertscore_r", "bertscore_f"]].to_numpy()
            times["ours"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got_ref2 = reference_scores(ref, refs, cands2)
            times["reference_rescore"].append(time.perf_counter() - t0)
            embedded = metric.scorer().embedded_texts
            t0 = time.perf_counter()
            got2 = metric.per_sample(refs, cands2)[["bertscore_p", "bertscore_r", "bertscore_f"]].to_numpy()
            times["ours_rescore"].append(time.perf_counter() - t0)
            rescore_embedded = metric.scorer().embedded_texts - embedded
            diffs += [np.abs(got - expected).max(), np.abs(got2 - expected2).max(),
                      np.abs(got_ref - expected).max(), np.abs(got_ref2 - expected2).max()]
        scorer = fresh().scorer()
        real_tokens = sum(len(t) for t in scorer.encode(list(dict.fromkeys(refs + cands))))
        floor_s = gemm_floor_seconds(scorer.model, real_tokens, args.repeats)
    max_diff = float(max(diffs))
    if max_diff > 1e-6:
        raise SystemExit(f"scores differ by {max_diff:.2e} (> 1e-6): no timing reported")
    best = {k: min(v) for k, v in times.items()}
    n = len(refs)
    probe = fresh()
    res = {"size": args.size, "n_pairs": n, "layer": layer, "batch_size": probe.batch_size,
           "batch_tokens": probe.batch_tokens, "distinct_texts": len(set(refs + cands)),
           "reference_s": best["reference"], "ours_s": best["ours"], "speedup": best["reference"] / best["ours"],
           "reference_rescore_s": best["reference_rescore"], "ours_rescore_s": best["ours_rescore"],
           "rescore_speedup": best["reference_rescore"] / best["ours_rescore"],
           "rescore_embedded_texts": rescore_embedded, "max_abs_diff": max_diff,
           "real_tokens": real_tokens, "floor_s": floor_s, "reference_over_floor": best["reference"] / floor_s,
           "ours_over_floor": best["ours"] / floor_s,
           "torch_threads": torch.get_num_threads(), "cpu": platform.processor(),
           "all_times_s": {k: [round(t, 4) for t in v] for k, v in times.items()}}
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"{n} phantom pairs ({res['distinct_texts']} distinct texts), random {args.size} weights, layer {layer}, "
          f"{res['torch_threads']} torch threads; P, R, F equal to {max_diff:.1e}")
    for name, label in (("reference", "bert-score 0.3.13"), ("ours", "ours, nothing cached"),
                        ("reference_rescore", "bert-score, next system"),
                        ("ours_rescore", f"ours, next system ({rescore_embedded} texts embedded)")):
        print(f"  {label:44s} {best[name]:8.3f} s  {n / best[name]:8.1f} pairs/s")
    print(f"  {'floor: linear layers over the ' + str(real_tokens) + ' real tokens':44s} {floor_s:8.3f} s")
    print(f"  ours vs bert-score {res['speedup']:.2f}x; next system against the same references "
          f"{res['rescore_speedup']:.2f}x")
    print(f"  bert-score is {res['reference_over_floor']:.2f}x the floor, ours {res['ours_over_floor']:.2f}x: no exact "
          f"first score can be more than {res['reference_over_floor']:.2f}x faster than bert-score here")


if __name__ == "__main__":
    main()
