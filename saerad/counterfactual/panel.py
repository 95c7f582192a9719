"""The paper's Figure 4 row as a PNG: original, reconstruction, feature added, feature removed,
and the difference map |added - removed| over the original image; and the thresholded map as a mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save_panel(path: Path, original: np.ndarray, reconstruction: np.ndarray, added: np.ndarray,
               removed: np.ndarray, diff: np.ndarray, title: str, truth: np.ndarray | None = None) -> Path:
    """All images (H, W); uint8 except `diff` (float). `truth`, when given, is outlined on the map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(12.5, 2.9), dpi=110)
    cols = [("original", original), ("reconstruction", reconstruction), ("feature added", added),
            ("feature removed", removed)]
    for ax, (name, img) in zip(axes, cols):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    ax = axes[4]
    ax.imshow(original, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.imshow(diff, cmap="inferno", alpha=0.65, interpolation="nearest", vmin=0, vmax=max(float(diff.max()), 1e-6))
    if truth is not None and truth.any():
        ax.contour(truth.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
    y, x = np.unravel_index(int(np.argmax(diff)), diff.shape)
    ax.plot([x], [y], marker="+", color="lime", markersize=9, mew=1.5)
    ax.set_title("|added - removed|" + (" (truth in cyan)" if truth is not None else ""), fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_mask(path: Path, diff: np.ndarray, threshold: float, size: int) -> tuple[Path, float]:
    """Pixels where diff >= threshold * max(diff), as a black/white PNG of `size` x `size`;
    returns the path and the share of pixels in the mask."""
    m = diff >= threshold * float(diff.max()) if diff.max() > 0 else np.zeros_like(diff, dtype=bool)
    im = Image.fromarray(m.astype(np.uint8) * 255, mode="L").resize((size, size), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path, float(m.mean())
