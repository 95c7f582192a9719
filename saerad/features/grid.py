"""A PNG grid of a feature's top training images (the paper's Figure 2 view)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from bench.errors import DataError

log = logging.getLogger(__name__)


def save_grid(index: Any, feature: int, out: str | Path, cols: int = 5, tile_inches: float = 2.2) -> Path:
    """Draw the top images of `feature`, strongest first, each titled with its rank, activation
    and dicom_id. Missing image files are drawn as empty tiles with a note, not an error."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt
    from PIL import Image

    top = index.top(feature)
    if not top:
        raise DataError(f"feature {feature} never fires on the training images; there is nothing to draw")
    cols = max(1, min(cols, len(top)))
    rows = math.ceil(len(top) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * tile_inches, rows * tile_inches + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, (rec, act) in enumerate(top):
        ax = axes.flat[n]
        path = Path(rec["image_path"])
        try:
            with Image.open(path) as im:
                ax.imshow(im.convert("L"), cmap="gray")
        except OSError:
            ax.text(0.5, 0.5, "image missing", ha="center", va="center", transform=ax.transAxes)
            log.warning("feature grid: cannot read %s", path)
        ax.set_title(f"#{n + 1}  f={act:.3g}\n{rec['dicom_id'][:18]}", fontsize=7)
    fig.suptitle(f"feature {feature}: top {len(top)} training images", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
