"""Best single SAE feature against the encoder's linear probe, for SAEs other than the recipe.

Trains each SAE below on the embedded default's cached training tokens (the phantom encoder's
CLS tokens of the 1,999 training images) with the `saerad.sae` trainer and prints, as a markdown
table, the test AUROC of the best feature (chosen on train, as `bench features audit` chooses
it) for the findings the audit flags, beside the probe. docs/saerad-audit.md quotes its output.

    python scripts/sae_probe_gap.py [--findings cardiomegaly,pleural_effusion_right,atelectasis]

About 15 minutes on 2 CPU cores (17 trainings, each with its L0 calibration).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.data.phantom.findings import FINDINGS

RECIPE = dict(arch="hybrid-gated", steps=500, batch_size=256, lr=3e-3, target_l0=15.0, expansion=8)


@dataclass
class Variant:
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    whiten: bool = False


VARIANTS = [
    Variant("hybrid-gated x8, 500 steps (the recipe)"),
    Variant("hybrid-gated x8, 2,000 steps, L0 calibrated over the whole schedule",
            {"steps": 2000, "target_l0_steps": 2000, "target_l0_trials": 6}),
    Variant("hybrid-gated x16", {"expansion": 16}),
    Variant("hybrid-gated, 96 features", {"d_sae": 96}),
    Variant("hybrid-gated, 384 features", {"d_sae": 384}),
    Variant("TopK x8, k 15", {"arch": "topk", "target_l0": None, "sae_options": {"k": 15}}),
    Variant("standard (ReLU + L1) x8", {"arch": "standard"}, seeds=(0, 1, 2, 3, 4)),
    Variant("gated x8", {"arch": "gated"}),
    Variant("April-update x8", {"arch": "april-update"}),
    Variant("hybrid-gated x8, ZCA-whitened tokens", whiten=True),
    Variant("hybrid-gated x8, target L0 30", {"target_l0": 30.0}),
    Variant("hybrid-gated x8, target L0 60", {"target_l0": 60.0}),
]


def tokens_and_labels() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import pandas as pd

    from bench.stages.data import DataConfig, open_context

    ctx, _ = open_context(DataConfig(split="test"))
    ctx.progress, ctx.eval_split = False, None  # this script reads the test labels itself
    planted = pd.read_csv(ctx.data_root / "phantom-labels.csv.gz", dtype={"dicom_id": str}).set_index("dicom_id")
    out = {}
    for split in ("train", "test"):
        samples = ctx.dataset(split).samples
        x = np.asarray(ctx.tokens(samples, split), np.float32)
        out[split] = (x, planted.loc[[s.dicom_id for s in samples], list(FINDINGS)].to_numpy(np.int8))
    return out


def zca(train: np.ndarray, rel_eps: float = 0.1):
    mean = train.mean(0)
    lam, vec = np.linalg.eigh(np.cov((train - mean).T))
    w = vec @ np.diag(1 / np.sqrt(lam + rel_eps * lam.max())) @ vec.T
    return lambda x: ((x - mean) @ w).astype(np.float32)


def best_feature_aurocs(sae, data, columns: list[int]) -> tuple[list[float], float]:
    from saerad.audit import best_feature

    (x_tr, y_tr), (x_te, y_te) = data["train"], data["test"]
    with torch.no_grad():
        a_tr, a_te = (sae.feature_activations(torch.as_tensor(x)).numpy() for x in (x_tr, x_te))
    out = [best_feature(a_tr, y_tr[:, j], a_te, y_te[:, j])[2] for j in columns]
    return out, float((a_te > 0).sum(1).mean())


def main() -> None:
    from bench.encoders import probe_auroc
    from saerad.sae import TrainConfig, Trainer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--findings", default="cardiomegaly,pleural_effusion_right,atelectasis")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = args.findings.split(",")
    columns = [FINDINGS.index(n) for n in names]
    data = tokens_and_labels()
    probe = probe_auroc(data["train"][0], data["train"][1][:, columns], data["test"][0], data["test"][1][:, columns])
    print("| SAE (1,999 training tokens; target L0 15 unless said) | L0 | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    print("| the encoder's linear probe | | " + " | ".join(f"{probe[str(i)]:.3f}" for i in range(len(names))) + " |")
    for v in VARIANTS:
        d = data
        if v.whiten:
            f = zca(data["train"][0])
            d = {s: (f(x), y) for s, (x, y) in data.items()}
        rows = []
        for seed in v.seeds:
            cfg = TrainConfig(**{**RECIPE, **v.options, "seed": seed, "log_every": 100, "checkpoint_every": 10 ** 9})
            sae = Trainer(cfg, d["train"][0]).train()
            rows.append(best_feature_aurocs(sae, d, columns))
        cells = []
        for i in range(len(names)):
            vals = [r[0][i] for r in rows]
            cells.append(f"{vals[0]:.3f}" if len(vals) == 1 else f"{min(vals):.3f} to {max(vals):.3f}")
        l0 = [r[1] for r in rows]
        label = v.name + (f", seeds {v.seeds[0]} to {v.seeds[-1]}" if len(v.seeds) > 1 else "")
        print(f"| {label} | {min(l0):.0f}" + (f" to {max(l0):.0f}" if len(l0) > 1 else "") + " | "
              + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
