"""Settings of the token-conditioned diffusion model: architecture, schedule and training recipe.

Two presets (docs/counterfactual.md):

- ``mimic``: the paper's App. D recipe for MIMIC-CXR at 128 x 128 -- a three-block 2D UNet (two
  residual units per block, SiLU, group norm; self-attention in the second and third blocks),
  the CLS token linearly projected to 1,024 values laid out as a 32 x 32 map and broadcast
  (nearest upsampling) to the image size as one extra input channel, epsilon prediction with
  the linear DDPM schedule over 1,000 steps, 330 epochs, batch 256, AdamW at 1e-3, a 90/10
  train/validation split. The paper gives no channel widths; ours are in ``MIMIC``.
- ``phantom``: the same design at 64 x 64 with narrow blocks, the image folded into 4 channels
  of 32 x 32 (pixel unshuffle) before the UNet, so that it trains on a shared laptop CPU (see
  scripts/train_phantom_diffusion.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from bench.errors import BenchError


@dataclass(frozen=True)
class DiffusionConfig:
    image_size: int = 64
    # The UNet sees the image folded into space_to_depth**2 channels at 1/space_to_depth of its
    # size (pixel unshuffle): a quarter of the cost at factor 2 with every pixel kept.
    space_to_depth: int = 2
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    attention: tuple[bool, ...] = (False, True, True)  # self-attention per block (down; up mirrored)
    layers_per_block: int = 2  # residual units per block
    norm_num_groups: int = 8
    attention_head_dim: int = 16
    # The projected token: cond_channels maps of cond_grid x cond_grid, upsampled to the image.
    cond_channels: int = 4
    cond_grid: int = 16
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    # Training recipe
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2  # AdamW's default
    val_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 50  # optimiser steps between checkpoints (and at every epoch end)

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        if len(self.attention) != n:
            raise BenchError(f"attention has {len(self.attention)} entries but there are {n} blocks")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise BenchError(f"every block width {self.block_out_channels} must be a multiple of "
                             f"norm_num_groups={self.norm_num_groups}")
        if self.image_size % (self.space_to_depth * 2 ** (n - 1)):
            raise BenchError(f"image_size {self.image_size} must be divisible by {self.space_to_depth * 2 ** (n - 1)} "
                             f"({n} blocks, space_to_depth {self.space_to_depth})")
        for name in ("epochs", "batch_size", "cond_channels", "cond_grid", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise BenchError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    # Fields that define the network (a checkpoint is only usable with the same ones).
    ARCH_FIELDS = ("image_size", "space_to_depth", "block_out_channels", "attention", "layers_per_block", "norm_num_groups",
                   "attention_head_dim", "cond_channels", "cond_grid", "num_train_timesteps", "beta_schedule")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        d["attention"] = list(self.attention)
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DiffusionConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BenchError(f"unknown diffusion setting(s) {unknown}; valid: {sorted(known)}")
        v = dict(values)
        for key in ("block_out_channels", "attention"):
            if key in v:
                v[key] = tuple(v[key])
        return cls(**v)

    def architecture(self) -> dict[str, Any]:
        d = self.to_dict()
        return {k: d[k] for k in self.ARCH_FIELDS}


PHANTOM = DiffusionConfig()
# The paper's recipe (App. D); widths are ours (the paper does not give them).
MIMIC = DiffusionConfig(image_size=128, space_to_depth=1, block_out_channels=(128, 256, 256), attention=(False, True, True),
                        norm_num_groups=32, attention_head_dim=64, cond_channels=1, cond_grid=32,
                        epochs=330, batch_size=256, lr=1e-3, checkpoint_every=500)
PRESETS: dict[str, DiffusionConfig] = {"phantom": PHANTOM, "mimic": MIMIC}


def preset(name: str, **overrides: Any) -> DiffusionConfig:
    if name not in PRESETS:
        raise BenchError(f"unknown diffusion preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]
