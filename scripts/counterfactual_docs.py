"""Regenerate docs/counterfactual.md's panels and tables on the embedded default.

With the bundled phantom diffusion model and SAE-Rad's SAE on the embedded default dataset:
one Figure-4 row per finding (pacemaker, sternotomy wires, cardiomegaly: its best feature on
the first test image that has it), and `bench counterfactual eval` (checks and localisation on
50 images per finding) written to docs/counterfactual-eval.json and .md.

    python scripts/counterfactual_docs.py [--n 50] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from saerad.counterfactual.cli import choose_target, draw_panel, open_generator  # noqa: E402
from saerad.counterfactual.report import markdown, run_eval  # noqa: E402
from saerad.counterfactual.truth import DEFAULT_FINDINGS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--panels-only", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(1)
    ctx, gen, src, _ = open_generator(None, None, None, "cpu", None, None, args.steps, "ddim", 0)
    for finding in DEFAULT_FINDINGS:
        sample, feature, _ = choose_target(ctx, src, None, None, finding, "test")
        path = draw_panel(ctx, gen, src, sample, feature, finding, None, REPO / "docs" / "img" / f"counterfactual-{finding}.png")
        print(path)
    if args.panels_only:
        return
    t0 = time.perf_counter()
    result = run_eval(gen, ctx, src, list(DEFAULT_FINDINGS), [], args.n, 1, None)
    result.settings["seconds"] = round(time.perf_counter() - t0)
    out = REPO / "docs" / "counterfactual-eval.json"
    out.write_text(json.dumps(result.to_json(), indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
