"""The token-conditioned denoiser: diffusers' UNet2DModel with the CLS token as extra input channels.

The token is standardised (per-dimension mean and standard deviation of the training tokens,
kept as buffers so they travel with the weights), projected by one linear layer to
``cond_channels * cond_grid**2`` values, laid out as ``cond_channels`` maps of
``cond_grid x cond_grid`` and upsampled (nearest) to the image size, then concatenated with the
noisy image (folded by pixel unshuffle when space_to_depth > 1) as input channels: the paper's
"class-free" conditioning (App. D), with no class or time-embedding route for the token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saerad.counterfactual.config import DiffusionConfig


def build_unet(cfg: DiffusionConfig, in_channels: int, out_channels: int):
    from diffusers import UNet2DModel

    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    return UNet2DModel(sample_size=cfg.image_size // cfg.space_to_depth, in_channels=in_channels,
                       out_channels=out_channels,
                       layers_per_block=cfg.layers_per_block, block_out_channels=tuple(cfg.block_out_channels),
                       down_block_types=down, up_block_types=up, norm_num_groups=cfg.norm_num_groups,
                       attention_head_dim=cfg.attention_head_dim, act_fn="silu")


class TokenConditionedUNet(nn.Module):
    """epsilon_theta(x_t, t, z): predicts the noise of a 1-channel image given a CLS token z."""

    def __init__(self, cfg: DiffusionConfig, token_dim: int):
        super().__init__()
        self.cfg = cfg
        self.token_dim = token_dim
        self.register_buffer("token_mean", torch.zeros(token_dim))
        self.register_buffer("token_std", torch.ones(token_dim))
        self.project = nn.Linear(token_dim, cfg.cond_channels * cfg.cond_grid ** 2)
        folded = cfg.space_to_depth ** 2
        self.unet = build_unet(cfg, in_channels=folded + cfg.cond_channels, out_channels=folded)

    def set_token_stats(self, tokens: Tensor) -> None:
        self.token_mean.copy_(tokens.mean(0))
        # A dimension that never varies would divide by zero; its value then carries nothing.
        self.token_std.copy_(tokens.std(0).clamp_min(1e-6))

    def condition(self, tokens: Tensor, size: int) -> Tensor:
        z = (tokens - self.token_mean) / self.token_std
        c = self.project(z).view(-1, self.cfg.cond_channels, self.cfg.cond_grid, self.cfg.cond_grid)
        return F.interpolate(c, size=(size, size), mode="nearest")

    def forward(self, x_t: Tensor, t: Tensor, tokens: Tensor) -> Tensor:
        r = self.cfg.space_to_depth
        x = F.pixel_unshuffle(x_t, r) if r > 1 else x_t
        cond = self.condition(tokens, x.shape[-1])
        eps = self.unet(torch.cat([x, cond], dim=1), t).sample
        return F.pixel_shuffle(eps, r) if r > 1 else eps
