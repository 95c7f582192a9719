"""The data scaling constant c of SAE-Rad (paper App. B.3; docs/method.md, Data scaling).

Tokens are multiplied by one constant c chosen so that the mean L2 norm of the scaled
training tokens is sqrt(d_in):  E||c z||_2 = sqrt(d_in)  =>  c = sqrt(d_in) / E||z||_2.
c is stored with the model (the ``scale`` buffer) and applied by ``encode``.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from saerad.sae.errors import SAEDataError


def _as_numpy(batch: object) -> np.ndarray:
    if isinstance(batch, torch.Tensor):
        return batch.detach().cpu().numpy()
    return np.asarray(batch)


def estimate_scale(batches: Iterable[object] | np.ndarray | torch.Tensor, chunk: int = 65536) -> float:
    """c = sqrt(d_in) / mean_z ||z||_2 over all given tokens (float64 accumulation).

    ``batches`` is one (N, d_in) array/tensor or an iterable of such batches; each token
    counts once, so pass one pass over the training tokens (not an endless iterator).
    """
    if isinstance(batches, (np.ndarray, torch.Tensor)):
        arr = batches
        batches = (arr[i : i + chunk] for i in range(0, len(arr), chunk))
    total, count, d_in = 0.0, 0, None
    for batch in batches:
        z = _as_numpy(batch)
        if z.ndim != 2:
            raise SAEDataError(f"token batches must be 2-D (tokens, d_in); got shape {z.shape}")
        if d_in is None:
            d_in = z.shape[1]
        elif z.shape[1] != d_in:
            raise SAEDataError(f"token batches disagree on d_in: {d_in} vs {z.shape[1]}")
        norms = np.linalg.norm(z.astype(np.float64), axis=1)
        if not np.all(np.isfinite(norms)):
            raise SAEDataError("tokens contain NaN or infinite values; re-create or clean the token source")
        total += float(norms.sum())
        count += len(norms)
    if count == 0 or d_in is None:
        raise SAEDataError("cannot estimate the scaling constant from zero tokens")
    mean_norm = total / count
    if mean_norm == 0.0:
        raise SAEDataError("all tokens are zero vectors; the scaling constant is undefined")
    return math.sqrt(d_in) / mean_norm
