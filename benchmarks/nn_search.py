"""Benchmark: exact nearest-neighbour search vs the bare matrix product it is built on.

The paper's scale: 3,403 test x 239,931 train tokens of width 768. The floor is one
dense product Q @ K^T of that shape (what any exact L2 search must at least compute);
ours adds the norms, a running top-k per chunk and a float64 re-rank. Both are timed in
the same process, alternating, and the median of `--repeats` runs is reported.

    python benchmarks/nn_search.py [--n-queries 3403 --n-keys 239931 --dim 768] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from baselines.nn_search import nearest_neighbours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-queries", type=int, default=3403)
    ap.add_argument("--n-keys", type=int, default=239931)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    q = torch.randn(args.n_queries, args.dim, generator=g)
    k = torch.randn(args.n_keys, args.dim, generator=g)

    def floor() -> None:
        torch.mm(q, k.T)  # the whole product at once, as a user would write it

    buf = torch.empty(args.n_queries, 16384)

    def floor_chunked() -> None:
        # The compute floor: the same products into one reused buffer (no 3 GB allocation),
        # exactly the matmuls our search performs, with nothing else.
        for s in range(0, k.shape[0], 16384):
            kc = k[s:s + 16384]
            torch.mm(q, kc.T, out=buf[:, :kc.shape[0]])

    def ours() -> None:
        nearest_neighbours(q, k)

    floor(), floor_chunked(), ours()  # warm-up: allocator, thread pool
    t_floor, t_chunked, t_ours = [], [], []
    for _ in range(args.repeats):
        for fn, acc in ((floor, t_floor), (floor_chunked, t_chunked), (ours, t_ours)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    res = {"n_queries": args.n_queries, "n_keys": args.n_keys, "dim": args.dim,
           "ours_s": statistics.median(t_ours), "floor_matmul_s": statistics.median(t_floor),
           "floor_chunked_matmul_s": statistics.median(t_chunked),
           "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    res["ratio"] = res["ours_s"] / res["floor_matmul_s"]
    res["ratio_chunked"] = res["ours_s"] / res["floor_chunked_matmul_s"]
    if args.json:
        print(json.dumps(res))
    else:
        print(f"exact NN search {args.n_queries} x {args.n_keys} x {args.dim}: ours {res['ours_s']:.2f}s, "
              f"bare matmul {res['floor_matmul_s']:.2f}s (ratio {res['ratio']:.2f}), "
              f"chunked matmul into a reused buffer {res['floor_chunked_matmul_s']:.2f}s "
              f"(ratio {res['ratio_chunked']:.2f}) "
              f"(torch threads {res['threads']})")


if __name__ == "__main__":
    main()
