"""Images and CLS tokens of a dataset split, as the diffusion model sees them.

Images are read as greyscale, reduced to the model's size by area averaging (PIL's BOX filter)
and mapped to [-1, 1]; tokens come from the harness's shared token cache (RunContext.tokens),
so the diffusion model is trained on exactly the tokens the SAE and the systems use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from bench.errors import BenchError


def read_image(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def to_model(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [-1, 1]."""
    return torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """float (N, 1, H, W) in [-1, 1] -> uint8 (N, H, W)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).squeeze(1).cpu().numpy()


def to_pil(pixels: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(p, mode="L") for p in pixels]


@dataclass
class SplitData:
    samples: list[Any]
    pixels: np.ndarray  # uint8 (N, size, size)
    tokens: np.ndarray  # float32 (N, d)
    fingerprint: str  # of the dataset split


def load_split_data(ctx: Any, split: str, size: int) -> SplitData:
    ds = ctx.dataset(split) if split == "train" else ctx.evaluation_dataset()
    if not ds.samples:
        raise BenchError(f"the {split} split of {ctx.data_root} has no images")
    tokens = ctx.tokens(ds.samples, split)
    pixels = np.stack([read_image(s.image_path, size) for s in ds.samples])
    return SplitData(list(ds.samples), pixels, np.asarray(tokens, dtype=np.float32), ds.fingerprint)


def find_sample(samples: Sequence[Any], image: str) -> int:
    """Index of the sample whose id or dicom_id is `image`; a clear error when there is none."""
    for i, s in enumerate(samples):
        if image in (s.id, s.dicom_id):
            return i
    raise BenchError(f"image {image!r} is not in this split ({len(samples)} images); give a dicom_id of it, "
                     f"e.g. {samples[0].dicom_id}" if samples else f"image {image!r}: the split is empty")


def subject_split(samples: Sequence[Any], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices, split by subject so that no patient is on both sides."""
    subjects = sorted({s.subject_id for s in samples})
    rng = np.random.default_rng([seed, 17])
    rng.shuffle(subjects)
    n_val = max(1, round(val_fraction * len(subjects)))
    val_subjects = set(subjects[:n_val])
    is_val = np.array([s.subject_id in val_subjects for s in samples])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def open_context(data_root: Path | None = None, cache_dir: Path | None = None, encoder: str | None = None,
                 device: str | None = None, work_dir: Path | None = None, eval_split: str | None = "test",
                 reports: Path | None = None) -> Any:
    """A run context on `data_root` (default: the embedded phantom), as `bench` commands build them."""
    from bench.context import RunContext
    from bench.data.default import cache_root, embedded_default_root

    root = Path(data_root) if data_root else embedded_default_root(cache_dir)
    if not root.exists():
        raise BenchError(f"--data-root {root} does not exist")
    name = "phantom" if (root / "phantom.json").exists() else "mimic-cxr"
    return RunContext(data_root=root, dataset_name=name, cache_dir=Path(cache_dir) if cache_dir else cache_root(),
                      work_dir=work_dir or Path("."), encoder_id=encoder, device=device, eval_split=eval_split,
                      progress=False, reports=reports)
