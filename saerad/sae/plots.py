"""PNG figures for SAE runs: feature density histogram and loss curves (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_feature_density(frequency: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Histogram of log10(firing frequency) over features that fired at least once.

    Dead features (frequency 0) have no logarithm; their count goes into the title.
    """
    plt = _pyplot()
    freq = np.asarray(frequency, dtype=np.float64)
    alive = freq[freq > 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    if alive.size:
        ax.hist(np.log10(alive), bins=50, color="tab:blue")
    ax.set_xlabel("log10(feature firing frequency)")
    ax.set_ylabel("features")
    dead = int((freq == 0).sum())
    ax.set_title(f"{title + ': ' if title else ''}{freq.size} features, {dead} dead")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_loss_curves(history: Sequence[dict[str, Any]], path: str | Path,
                     terms: Sequence[str] = ("loss", "recon", "sparsity", "aux")) -> Path:
    """Loss terms (log scale), L0 and explained variance against the training step."""
    plt = _pyplot()
    steps = [r["step"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for term in terms:
        values = [r.get(term) for r in history]
        if values and all(isinstance(v, (int, float)) for v in values):
            axes[0].plot(steps, values, label=term)
    axes[0].set_yscale("symlog", linthresh=1e-3)
    axes[0].set_title("loss terms (per-sample sums, batch mean)")
    axes[0].legend()
    axes[1].plot(steps, [r.get("l0", np.nan) for r in history], color="tab:green")
    axes[1].set_title("L0 (active features per token)")
    axes[2].plot(steps, [r.get("explained_variance", np.nan) for r in history], color="tab:red")
    axes[2].set_title("explained variance (batch)")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
