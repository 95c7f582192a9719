"""A tiny random Dinov2 checkpoint, for tests and offline dry runs of the encoder path.

It has Rad-DINO's architecture (Dinov2, patch 14) but a few thousand parameters, and is saved with
save_pretrained together with a BitImageProcessor config, exactly as a hub snapshot would be,
so that `load_encoder(path)` exercises the same code as for the real model.
"""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_dinov2(
    out_dir: str | Path,
    seed: int = 0,
    image_size: int = 56,
    hidden_size: int = 32,
    image_mean: tuple[float, float, float] = (0.53, 0.53, 0.53),
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25),
) -> Path:
    """Write a random Dinov2 (2 layers, patch 14) and its image processor to `out_dir`."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=2 * hidden_size, image_size=image_size, patch_size=14)
    torch.manual_seed(seed)
    Dinov2Model(config).save_pretrained(out)
    # Rad-DINO's processor: resize the shortest edge, centre crop, rescale, normalise.
    BitImageProcessor(
        do_resize=True, size={"shortest_edge": image_size},
        do_center_crop=True, crop_size={"height": image_size, "width": image_size},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=list(image_mean), image_std=list(image_std), do_convert_rgb=True,
    ).save_pretrained(out)
    return out
