"""Interventions on SAE features (paper App. D, Eqs. 13-14) and the tokens they give.

For a token z the SAE gives codes h = h(z) and a reconstruction z_hat = W_dec h + b_dec (in the
token's own units: the SAE's data scaling is undone). do(i, beta) sets h_i to beta; the
counterfactual token is W_dec do(i, beta; h) + b_dec plus the SAE's error term, so that what the
SAE does not reconstruct is carried over unchanged.

The paper writes the error term as delta = z_hat - z. Added to an unintervened reconstruction
that gives 2 z_hat - z, not z; we add z - z_hat, the sign for which an intervention that
changes nothing returns the original token exactly (tests/test_counterfactual.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bench.errors import BenchError


@dataclass
class Decomposition:
    z: Tensor  # (N, d) tokens
    h: Tensor  # (N, m) SAE codes
    error: Tensor  # (N, d) z - z_hat


def check_feature(sae, feature: int) -> None:
    if not 0 <= int(feature) < sae.d_sae:
        raise BenchError(f"feature {feature} is beyond this SAE's width: it has {sae.d_sae} features, "
                         f"ids 0 to {sae.d_sae - 1}")


@torch.no_grad()
def decompose(sae, z: Tensor) -> Decomposition:
    if z.ndim != 2 or z.shape[1] != sae.d_in:
        raise BenchError(f"tokens of width {z.shape[-1]} cannot go through this SAE, which takes {sae.d_in}-d tokens "
                         "(it was trained on another encoder's tokens)")
    h = sae.encode(z)
    return Decomposition(z, h, z - decode(sae, h))


@torch.no_grad()
def decode(sae, h: Tensor) -> Tensor:
    """W_dec h + b_dec in token units."""
    return sae.decode(h) / sae.scale


def do(h: Tensor, feature: int, beta: float | Tensor) -> Tensor:
    """do(i, beta; h): h with feature i set to beta (a number, or one value per row)."""
    out = h.clone()
    out[:, feature] = beta if not isinstance(beta, Tensor) else beta.to(out)
    return out


@torch.no_grad()
def token_with(sae, d: Decomposition, h: Tensor) -> Tensor:
    """The counterfactual token: W_dec h~ + b_dec + (z - z_hat)."""
    return decode(sae, h) + d.error


@torch.no_grad()
def feature_maxima(sae, tokens: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Each feature's largest code h_i over `tokens` (0 for features that never fire)."""
    out = np.zeros(sae.d_sae, dtype=np.float32)
    for start in range(0, len(tokens), chunk):
        h = sae.encode(torch.as_tensor(np.asarray(tokens[start:start + chunk], dtype=np.float32)))
        out = np.maximum(out, h.max(0).values.cpu().numpy())
    return out


def default_beta(maxima: np.ndarray, feature: int) -> float:
    """The code a feature reaches at most on the training split: 'added' as strongly as it ever fires."""
    beta = float(maxima[feature])
    if beta <= 0:
        raise BenchError(f"feature {feature} never fires on the training split (a dead feature); give --beta "
                         "explicitly to add it anyway")
    return beta
