"""Panels, the paper's checks (after Monteiro et al. 2023) and localisation against planted truth.

For tokens z of some images, a feature i and an amount beta, with the same starting noise for every
image (sample.py):

    reconstruction  I_rec = sample(z)                       (no intervention: the token is z itself)
    added           I_add = sample(token of do(i, beta))
    removed         I_rem = sample(token of do(i, 0))
    difference map  D     = |I_add - I_rem|                 (the paper's |I~_{i,0} - I~_{i,beta}|)

Checks, each a mean over images with a 95% bootstrap interval (scipy.stats.bootstrap, percentile):

- effectiveness: re-encode I_add and I_rem with the encoder and the SAE: the share of images where
  feature i's code is higher on I_add than on I_rem, and the mean gap (h_i(I_add) - h_i(I_rem)) / beta;
  and the share of images where feature i fires on neither (the encoder does not see the feature
  in the generated images at all);
- reversibility: add, then remove, and compare with what there was before the intervention,
  0 being a perfect return and 1 no return at all. Two cycles: the paper's, through the SAE
  (the intervened token re-encoded by the SAE, feature i set back to its original code, decoded
  with the new error term: distance to z over the distance of the intervened token from z, and
  the image drawn from it against the reconstruction, mean |I_back - I_rec| over mean
  |I_add - I_rec|); and Monteiro et al.'s, through pixels (I_add re-encoded by the encoder and the
  SAE, feature i set back, drawn again: the same pixel ratio, and ||enc(I_back) - enc(I_rec)|| over
  ||enc(I_add) - enc(I_rec)|| in tokens), which also measures how faithfully the generator's
  images carry their tokens;
- composition: how much the other features active on the original image change, as the sum of
  their absolute code changes over the sum of their codes: on the token itself (SAE re-encoding of
  the intervened token) and through pixels (re-encoded I_add against re-encoded I_rec).

Localisation (phantom only, where every finding's pixels are known, bench/data/phantom/masks.py):
the finding's mask is reduced to the model's resolution (a pixel is in it when any pixel of its
block is) and dilated by `dilate` pixels; the pointing game hits when D's maximum lies inside
that dilated mask; IoU compares D's top region (its |mask| largest pixels) with the undilated
mask. Chance is the same numbers for a random feature per image (drawn from the features that
fire on the training split).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

from saerad.counterfactual.data import to_model, to_pil, to_pixels
from saerad.counterfactual.intervene import Decomposition, decompose, do, token_with
from saerad.counterfactual.sample import sample

log = logging.getLogger(__name__)


@dataclass
class Interval:
    value: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def mean_interval(x: Sequence[float], seed: int = 0) -> Interval:
    from scipy.stats import bootstrap

    a = np.asarray(x, dtype=float)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if len(a) == 1 or np.all(a == a[0]):
        return Interval(float(a.mean()), float(a.mean()), float(a.mean()), len(a))
    ci = bootstrap((a,), np.mean, n_resamples=2000, method="percentile", confidence_level=0.95,
                   random_state=np.random.default_rng(seed)).confidence_interval
    return Interval(float(a.mean()), float(ci.low), float(ci.high), len(a))


@dataclass
class Generator:
    """The diffusion model, the SAE and the encoder, with one sampling setting."""

    model: Any
    sae: Any
    encoder: Any
    steps: int = 50
    scheduler: str = "ddim"
    seed: int = 0

    def images(self, tokens: torch.Tensor) -> torch.Tensor:
        return sample(self.model, tokens, seed=self.seed, steps=self.steps, scheduler=self.scheduler)

    def reencode(self, images: torch.Tensor) -> torch.Tensor:
        """CLS tokens of generated images, through the encoder's own preprocessing."""
        return torch.from_numpy(self.encoder.encode(to_pil(to_pixels(images))))

    @torch.no_grad()
    def panel(self, z: torch.Tensor, feature: int, beta: float) -> dict[str, torch.Tensor]:
        """reconstruction, added, removed (and the decomposition) for tokens z, in one sampling batch."""
        d = decompose(self.sae, z)
        n = len(z)
        tokens = torch.cat([d.z, token_with(self.sae, d, do(d.h, feature, beta)),
                            token_with(self.sae, d, do(d.h, feature, 0.0))])
        imgs = self.images(tokens)
        return {"reconstruction": imgs[:n], "added": imgs[n:2 * n], "removed": imgs[2 * n:], "decomposition": d}


def difference(added: torch.Tensor, removed: torch.Tensor) -> np.ndarray:
    """|I_add - I_rem| per pixel, (N, H, W), in [0, 2]."""
    return (added - removed).abs().squeeze(1).cpu().numpy()


# -- checks -----------------------------------------------------------------------------------------
@dataclass
class Checks:
    feature: int
    beta: float
    n: int
    effectiveness_order: Interval  # share with h_i(I_add) > h_i(I_rem)
    effectiveness_gap: Interval  # mean (h_i(I_add) - h_i(I_rem)) / beta
    effectiveness_silent: Interval  # share where feature i fires on neither re-encoded image
    reversibility_sae_tokens: Interval  # the paper's cycle, through the SAE
    reversibility_sae_pixels: Interval
    reversibility_pixels: Interval  # the cycle through pixels and the encoder
    reversibility_tokens: Interval
    composition_token: Interval
    composition_pixels: Interval

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _others_change(h_after: torch.Tensor, h_before: torch.Tensor, active: torch.Tensor, feature: int) -> np.ndarray:
    mask = active.clone()
    mask[:, feature] = False
    change = ((h_after - h_before).abs() * mask).sum(1)
    base = (h_before.abs() * mask).sum(1)
    return (change / base.clamp_min(1e-12)).where(base > 0, torch.full_like(base, float("nan"))).cpu().numpy()


@torch.no_grad()
def checks(gen: Generator, z: torch.Tensor, feature: int, beta: float,
           panel: dict[str, torch.Tensor] | None = None) -> tuple[Checks, dict[str, torch.Tensor]]:
    p = panel or gen.panel(z, feature, beta)
    d: Decomposition = p["decomposition"]
    sae = gen.sae
    z_rec, z_add, z_rem = (gen.reencode(p[k]) for k in ("reconstruction", "added", "removed"))
    h_rec, h_add, h_rem = sae.encode(z_rec), sae.encode(z_add), sae.encode(z_rem)
    order = (h_add[:, feature] > h_rem[:, feature]).float().numpy()
    gap = ((h_add[:, feature] - h_rem[:, feature]) / beta).numpy()
    silent = ((h_add[:, feature] <= 0) & (h_rem[:, feature] <= 0)).float().numpy()
    # The paper's cycle: the intervened token back through the SAE, feature i set back, drawn again.
    t_add = token_with(sae, d, do(d.h, feature, beta))
    d_cyc = decompose(sae, t_add)
    t_back = token_with(sae, d_cyc, do(d_cyc.h, feature, d.h[:, feature]))
    # Monteiro et al.'s cycle: the re-encoded added image with feature i set back. One sampling batch.
    d_add = decompose(sae, z_add)
    back_tokens = token_with(sae, d_add, do(d_add.h, feature, d.h[:, feature]))
    both = gen.images(torch.cat([t_back, back_tokens]))
    sae_back, back = both[:len(z)], both[len(z):]
    z_back = gen.reencode(back)
    px_sae_back = (sae_back - p["reconstruction"]).abs().mean((1, 2, 3))
    px_back = (back - p["reconstruction"]).abs().mean((1, 2, 3))
    px_add = (p["added"] - p["reconstruction"]).abs().mean((1, 2, 3))
    tok_back = (z_back - z_rec).norm(dim=1)
    tok_add = (z_add - z_rec).norm(dim=1)
    active = d.h > 0
    h_tok = d_cyc.h
    result = Checks(
        feature=int(feature), beta=float(beta), n=len(z),
        effectiveness_order=mean_interval(order), effectiveness_gap=mean_interval(gap),
        effectiveness_silent=mean_interval(silent),
        reversibility_sae_tokens=mean_interval(((t_back - d.z).norm(dim=1)
                                                / (t_add - d.z).norm(dim=1).clamp_min(1e-12)).numpy()),
        reversibility_sae_pixels=mean_interval((px_sae_back / px_add.clamp_min(1e-12)).numpy()),
        reversibility_pixels=mean_interval((px_back / px_add.clamp_min(1e-12)).numpy()),
        reversibility_tokens=mean_interval((tok_back / tok_add.clamp_min(1e-12)).numpy()),
        composition_token=mean_interval(_others_change(h_tok, d.h, active, feature)),
        composition_pixels=mean_interval(_others_change(h_add, h_rec, active, feature)),
    )
    return result, {**p, "back": back}


# -- localisation -----------------------------------------------------------------------------------
def reduce_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A full-resolution mask at `size` x `size`: a pixel is in it when any pixel of its block is."""
    f = mask.shape[0] // size
    if f * size != mask.shape[0]:
        raise ValueError(f"mask of {mask.shape[0]} px cannot be reduced to {size} px blocks")
    return mask.reshape(size, f, size, f).any(axis=(1, 3))


def pointing_hit(diff: np.ndarray, mask: np.ndarray, dilate: int) -> bool:
    region = ndimage.binary_dilation(mask, iterations=dilate) if dilate > 0 else mask
    y, x = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return bool(region[y, x])


def top_region_iou(diff: np.ndarray, mask: np.ndarray) -> float:
    k = int(mask.sum())
    if k == 0:
        return float("nan")
    top = np.zeros(diff.size, dtype=bool)
    top[np.argsort(diff.ravel(), kind="stable")[-k:]] = True
    top = top.reshape(diff.shape)
    return float((top & mask).sum() / (top | mask).sum())


@dataclass
class Localisation:
    finding: str
    feature: int
    feature_label: str
    feature_train_auroc: float
    n: int
    hit_rate: Interval
    random_hit_rate: Interval
    iou: Interval
    random_iou: Interval
    dilate: int
    image_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def localise(diffs: np.ndarray, random_diffs: np.ndarray, masks: Sequence[np.ndarray], dilate: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per image: (hit, random hit, IoU, random IoU) of difference maps against reduced masks."""
    hit = np.array([pointing_hit(d, m, dilate) for d, m in zip(diffs, masks)], dtype=float)
    rhit = np.array([pointing_hit(d, m, dilate) for d, m in zip(random_diffs, masks)], dtype=float)
    iou = np.array([top_region_iou(d, m) for d, m in zip(diffs, masks)])
    riou = np.array([top_region_iou(d, m) for d, m in zip(random_diffs, masks)])
    return hit, rhit, iou, riou


def images_to_model(pixels: np.ndarray) -> torch.Tensor:
    return to_model(pixels)
