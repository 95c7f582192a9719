"""SAE quality metrics, streamed over any number of token batches.

Definitions (also in docs/sae.md). All are computed on scaled tokens x = c z, the space the
SAE is trained in; x_hat = decode(encode(z)) and h are the feature codes.

- L0: mean over tokens of the number of features with h_i > 0.
- explained variance: 1 - sum_x ||x - x_hat||^2 / sum_x ||x - mean(x)||^2, with mean(x) the
  mean token of the evaluated set (the field's convention; invariant to the scaling c).
- MSE: mean over tokens and dimensions of (x - x_hat)^2. ``recon_loss`` is the same error
  summed over dimensions (the trainer's "recon" term, paper Eq. 3), i.e. MSE * d_in.
- feature frequency: the fraction of tokens on which a feature fires (h_i > 0).
  dead = never fires on the evaluated tokens; dense = frequency > ``dense_threshold``
  (default 0.1, i.e. fires on more than 10% of tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from saerad.sae.errors import SAEDataError
from saerad.sae.base import SparseAutoencoder

DENSE_THRESHOLD = 0.1


def explained_variance(x: Tensor, x_hat: Tensor) -> float:
    """1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2 over the rows of one batch."""
    x64, xh64 = x.double(), x_hat.double()
    sse = (x64 - xh64).pow(2).sum()
    sst = (x64 - x64.mean(dim=0)).pow(2).sum()
    return float(1.0 - sse / sst) if sst > 0 else float("nan")


class _VarianceAccumulator:
    """Total squared deviation from the running mean, merged batch by batch (Chan et al.),
    so the explained variance of a stream needs one pass and no catastrophic cancellation."""

    def __init__(self, d: int):
        self.count = 0
        self.mean = np.zeros(d, dtype=np.float64)
        self.m2 = 0.0

    def update(self, x: np.ndarray) -> None:
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        m2_b = float(((x - mean_b) ** 2).sum())
        total = self.count + n_b
        delta = mean_b - self.mean
        self.m2 += m2_b + float(delta @ delta) * self.count * n_b / total
        self.mean += delta * n_b / total
        self.count = total


@dataclass
class SAEEvalReport:
    n_tokens: int
    d_in: int
    d_sae: int
    l0: float
    explained_variance: float
    mse: float
    recon_loss: float
    dead_features: int
    dense_features: int
    dense_threshold: float
    feature_frequency: np.ndarray = field(repr=False)  # (d_sae,) fraction of tokens firing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-feature frequencies)."""
        return {
            "n_tokens": self.n_tokens, "d_in": self.d_in, "d_sae": self.d_sae,
            "l0": self.l0, "explained_variance": self.explained_variance, "mse": self.mse,
            "recon_loss": self.recon_loss, "dead_features": self.dead_features,
            "dead_fraction": self.dead_features / self.d_sae,
            "dense_features": self.dense_features, "dense_threshold": self.dense_threshold,
        }


@torch.no_grad()
def evaluate_sae(
    sae: SparseAutoencoder,
    batches: Iterable[Tensor],
    dense_threshold: float = DENSE_THRESHOLD,
) -> SAEEvalReport:
    """Metrics of ``sae`` over raw (unscaled) token batches; see the module docstring."""
    was_training = sae.training
    sae.eval()
    device = sae.W_dec.device
    var = _VarianceAccumulator(sae.d_in)
    sse, active_total, n = 0.0, 0.0, 0
    fired = torch.zeros(sae.d_sae, dtype=torch.float64)
    try:
        for z in batches:
            if z.ndim != 2:
                raise SAEDataError(
                    f"tokens have shape {tuple(z.shape)} but the SAE expects (N, {sae.d_in})"
                )
            sae.check_input(z)
            x = z.to(device=device, dtype=torch.float32) * sae.scale
            h = sae.encode_scaled(x)
            x_hat = sae.decode(h)
            active = h > 0
            fired += active.sum(dim=0).double().cpu()
            active_total += float(active.sum())
            sse += float((x.double() - x_hat.double()).pow(2).sum())
            var.update(x.double().cpu().numpy())
            n += x.shape[0]
    finally:
        sae.train(was_training)
    if n == 0:
        raise SAEDataError("no tokens to evaluate the SAE on")
    freq = (fired / n).numpy()
    return SAEEvalReport(
        n_tokens=n, d_in=sae.d_in, d_sae=sae.d_sae,
        l0=active_total / n,
        explained_variance=1.0 - sse / var.m2 if var.m2 > 0 else float("nan"),
        mse=sse / (n * sae.d_in),
        recon_loss=sse / n,
        dead_features=int((freq == 0).sum()),
        dense_features=int((freq > dense_threshold).sum()),
        dense_threshold=dense_threshold,
        feature_frequency=freq,
    )


class FiringWindow:
    """Which features fired recently during training: the last step on which each fired.

    A feature is dead over the window when it has not fired on any batch observed in the
    last ``window_steps`` steps (only once that many steps have been observed). Its state is
    saved with the trainer's so that resumed runs report the same numbers.
    """

    def __init__(self, d_sae: int, window_steps: int, start_step: int = 0):
        self.window_steps = window_steps
        self.start_step = start_step
        self.last_fired = torch.full((d_sae,), -1, dtype=torch.int64)

    def observe(self, step: int, h: Tensor) -> None:
        fired = (h > 0).any(dim=0).cpu()
        self.last_fired[fired] = step

    def dead_count(self, step: int) -> int | None:
        """Dead features over the window ending at ``step``; None while the window is not full."""
        if step - self.start_step + 1 < self.window_steps:
            return None
        return int((self.last_fired <= step - self.window_steps).sum())

    def state_dict(self) -> dict[str, Any]:
        return {"window_steps": self.window_steps, "start_step": self.start_step,
                "last_fired": self.last_fired.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window_steps = int(state["window_steps"])
        self.start_step = int(state["start_step"])
        self.last_fired = state["last_fired"].clone()
