"""Sampling: tokens -> images with the library's schedulers (DDIM by default, full DDPM on request).

Every image of one call starts from the same noise (drawn once from `seed`), so the images of a
panel differ only through their tokens (paper App. D). DDIM with eta = 0 is deterministic after
that draw; DDPM adds fresh noise at each step, drawn from the same seeded generator for every
image (the commands run it over all 1,000 training steps: the full chain).
"""

from __future__ import annotations

import torch

from bench.errors import BenchError
from saerad.counterfactual.model import TokenConditionedUNet

SCHEDULERS = ("ddim", "ddpm")


def make_sampler(model: TokenConditionedUNet, kind: str):
    from diffusers import DDIMScheduler, DDPMScheduler

    cfg = model.cfg
    common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                  prediction_type="epsilon", clip_sample=True)
    if kind == "ddim":
        return DDIMScheduler(**common, set_alpha_to_one=True)
    if kind == "ddpm":
        return DDPMScheduler(**common)
    raise BenchError(f"unknown scheduler {kind!r}; choose one of: {', '.join(SCHEDULERS)}")


@torch.no_grad()
def sample(model: TokenConditionedUNet, tokens: torch.Tensor, *, seed: int = 0, steps: int = 50,
           scheduler: str = "ddim", batch_size: int = 64) -> torch.Tensor:
    """Images (N, 1, H, W) in [-1, 1], one per token, all from the same starting noise."""
    if steps < 1:
        raise BenchError(f"--steps must be at least 1, got {steps}")
    sched = make_sampler(model, scheduler)
    sched.set_timesteps(steps)
    device = next(model.parameters()).device
    size = model.cfg.image_size
    out = []
    for start in range(0, len(tokens), batch_size):
        z = tokens[start:start + batch_size].to(device)
        # One generator per image, all seeded alike: the library draws each image's noise from
        # its own generator, so every image sees the same starting and step noise.
        gens = [torch.Generator().manual_seed(seed) for _ in range(len(z))]
        x = torch.stack([torch.randn((1, size, size), generator=g) for g in gens]).to(device)
        for t in sched.timesteps:
            eps = model(x, t.expand(len(z)).to(device), z)
            x = sched.step(eps, t, x, generator=gens).prev_sample
        out.append(x.cpu())
    return torch.cat(out) if out else torch.zeros((0, 1, size, size))
