"""Exact nearest-neighbour search in L2 by chunked matrix products.

||q - k||^2 = ||q||^2 - 2 q.k + ||k||^2, and ||q||^2 does not change the argmin, so each
chunk of keys costs one `addmm` (||k||^2 - 2 Q K^T) and a small top-k. The expansion loses
precision when distances are close, so we keep a few candidates per query and re-rank them
with distances computed directly in float64: the result is the exact nearest neighbour
(ties to the lowest key index) unless more than `n_candidates` keys are within float32
rounding of the best, which does not happen for real embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class NeighbourResult:
    index: np.ndarray  # (n_queries,) int64, index into keys
    distance: np.ndarray  # (n_queries,) float64, L2 distance


def nearest_neighbours(queries: np.ndarray | torch.Tensor, keys: np.ndarray | torch.Tensor,
                       key_chunk: int = 16384, query_chunk: int = 4096, n_candidates: int = 4,
                       device: str | None = None) -> NeighbourResult:
    q = torch.as_tensor(queries, dtype=torch.float32)
    k = torch.as_tensor(keys, dtype=torch.float32)
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"queries {tuple(q.shape)} and keys {tuple(k.shape)} must be 2-D with equal width")
    if k.shape[0] == 0:
        raise ValueError("no keys to search")
    dev = torch.device(device) if device else q.device
    q, k = q.to(dev), k.to(dev)
    n_cand = min(n_candidates, k.shape[0])
    key_sq = (k * k).sum(1)
    best_idx = torch.empty(q.shape[0], dtype=torch.int64)
    best_dist = torch.empty(q.shape[0], dtype=torch.float64)
    with torch.inference_mode():
        for qs in range(0, q.shape[0], query_chunk):
            qc = q[qs:qs + query_chunk]
            cand_val = torch.full((qc.shape[0], 0), float("inf"), device=dev)
            cand_idx = torch.empty((qc.shape[0], 0), dtype=torch.int64, device=dev)
            buf = torch.empty((qc.shape[0], min(key_chunk, k.shape[0])), device=dev)
            for ks in range(0, k.shape[0], key_chunk):
                kc = k[ks:ks + key_chunk]
                out = buf[:, :kc.shape[0]]
                torch.addmm(key_sq[ks:ks + kc.shape[0]], qc, kc.T, beta=1.0, alpha=-2.0, out=out)
                v, i = torch.topk(out, min(n_cand, kc.shape[0]), dim=1, largest=False, sorted=False)
                cand_val = torch.cat([cand_val, v], 1)
                cand_idx = torch.cat([cand_idx, i + ks], 1)
                if cand_val.shape[1] > n_cand:  # keep the running best few
                    cand_val, sel = torch.topk(cand_val, n_cand, dim=1, largest=False, sorted=False)
                    cand_idx = torch.gather(cand_idx, 1, sel)
            # Exact re-rank of the candidates in float64.
            diff = qc.double().unsqueeze(1) - k[cand_idx].double()
            d2 = (diff * diff).sum(-1)
            # Sort candidates by index first so that argmin's first-minimum rule breaks ties
            # toward the lowest key index.
            order = torch.argsort(cand_idx, dim=1)
            cand_idx = torch.gather(cand_idx, 1, order)
            d2 = torch.gather(d2, 1, order)
            j = torch.argmin(d2, dim=1, keepdim=True)
            best_idx[qs:qs + qc.shape[0]] = torch.gather(cand_idx, 1, j).squeeze(1).cpu()
            best_dist[qs:qs + qc.shape[0]] = torch.gather(d2, 1, j).squeeze(1).sqrt().cpu()
    return NeighbourResult(best_idx.numpy(), best_dist.numpy())
