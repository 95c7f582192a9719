"""The feature index: for every SAE feature, its top-k training images and activation statistics.

This is what feature labelling reads (paper §4.2: the reference reports of the k training
images with the highest activation f_i = h_i ||W_dec[:, i]||, in activation order) and what
`bench features show/grid` display.

Computation streams over the training tokens in chunks: each chunk's activations (chunk, m)
are reduced to a per-feature top-k and merged into a running (m, k) top-k, and the
frequency/sum/max statistics are accumulated. Memory is O(chunk x m + m x k), never the dense
(N, m) matrix (240k x 49,152 floats would be 47 GB at MIMIC scale).

Only images on which a feature actually fires (f_i > 0) enter its top-k; a feature that fires
on fewer than k images has the rest of its row padded with index -1 and activation 0.

On disk (in a directory, usually the SAE checkpoint's):

    feature_index.npz      top_index (m, k) int64 rows into the sample table, top_act (m, k)
                           float32, freq (m,) fraction of images with f_i > 0, max_act (m,),
                           mean_active (m,) mean of f_i over the images where it fires
    feature_index.parquet  the sample table: row, dicom_id, study_id, image_path, report
                           (only the training samples that appear in some top-k)
    feature_index.json     meta: format, k, n_images, d_sae, fingerprints of the SAE and data
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from bench.errors import BenchError, DataError

log = logging.getLogger(__name__)

FORMAT = "saerad-feature-index/1"
NPZ_FILE = "feature_index.npz"
TABLE_FILE = "feature_index.parquet"
META_FILE = "feature_index.json"


@dataclass
class FeatureIndex:
    """Top-k training images per feature and activation statistics.

    ``top_index`` rows point into ``samples`` (a DataFrame with columns dicom_id, study_id,
    image_path, report); -1 marks an empty slot. Activations are in descending order.
    """

    top_index: np.ndarray  # (m, k) int64
    top_act: np.ndarray  # (m, k) float32
    freq: np.ndarray  # (m,) float64
    max_act: np.ndarray  # (m,) float32
    mean_active: np.ndarray  # (m,) float64, 0 for features that never fire
    n_images: int
    samples: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def d_sae(self) -> int:
        return int(self.top_index.shape[0])

    @property
    def k(self) -> int:
        return int(self.top_index.shape[1])

    def check_feature(self, feature: int) -> None:
        if not 0 <= feature < self.d_sae:
            raise BenchError(f"feature {feature} does not exist: this SAE has features 0..{self.d_sae - 1}")

    def top(self, feature: int) -> list[tuple[dict[str, Any], float]]:
        """The (sample record, activation) pairs of a feature's top images, strongest first."""
        self.check_feature(feature)
        out = []
        for row, act in zip(self.top_index[feature], self.top_act[feature]):
            if row < 0:
                break
            out.append((self.samples.iloc[int(row)].to_dict(), float(act)))
        return out

    def top_reports(self, feature: int) -> list[str]:
        """Reference reports of the feature's top images, in activation order."""
        return [rec["report"] for rec, _ in self.top(feature)]

    def stats(self, feature: int) -> dict[str, float]:
        self.check_feature(feature)
        return {"frequency": float(self.freq[feature]), "max": float(self.max_act[feature]),
                "mean_active": float(self.mean_active[feature]),
                "n_active": int(round(self.freq[feature] * self.n_images))}

    # -- persistence ------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(out / NPZ_FILE, top_index=self.top_index, top_act=self.top_act, freq=self.freq,
                 max_act=self.max_act, mean_active=self.mean_active)
        self.samples.to_parquet(out / TABLE_FILE, index=False)
        meta = {**self.meta, "format": FORMAT, "k": self.k, "d_sae": self.d_sae, "n_images": self.n_images}
        # The JSON is written last: its presence marks a complete index.
        (out / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        return out


def index_exists(directory: str | Path) -> bool:
    d = Path(directory)
    return all((d / f).exists() for f in (META_FILE, NPZ_FILE, TABLE_FILE))


def read_index_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.exists():
        raise DataError(f"no feature index in {directory} ({META_FILE} missing); build one with "
                        "`bench features index --sae DIR` or a `bench run --system saerad` run")
    return json.loads(path.read_text())


def load_index(directory: str | Path) -> FeatureIndex:
    d = Path(directory)
    meta = read_index_meta(d)
    if meta.get("format") != FORMAT:
        raise DataError(f"{d / META_FILE}: format {meta.get('format')!r}, expected {FORMAT!r}; rebuild the index")
    with np.load(d / NPZ_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    samples = pd.read_parquet(d / TABLE_FILE)
    return FeatureIndex(arrays["top_index"], arrays["top_act"], arrays["freq"], arrays["max_act"],
                        arrays["mean_active"], int(meta["n_images"]), samples, meta)


@torch.no_grad()
def streaming_topk(
    sae: Any,
    tokens: np.ndarray,
    k: int = 10,
    chunk_size: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Per-feature top-k image rows and activation statistics of ``sae`` over ``tokens``.

    Returns top_index (m, k) with -1 for empty slots, top_act (m, k), count (m,) of images
    with f_i > 0, sum_act (m,), max_act (m,). Ties between equal activations go to the
    earlier image (a stable order), so the result equals a stable descending argsort.
    """
    if k < 1:
        raise BenchError(f"top-k needs k >= 1, got {k}")
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise DataError(f"the feature index needs a non-empty (N, d) token array, got shape {tokens.shape}")
    if tokens.shape[1] != sae.d_in:
        raise DataError(f"tokens have {tokens.shape[1]} dimensions but the SAE expects {sae.d_in}; "
                        "were they made by another encoder?")
    dev = torch.device(device)
    sae = sae.to(dev).eval()
    m, n = sae.d_sae, tokens.shape[0]
    top_act = torch.zeros(m, k, dtype=torch.float32, device=dev)
    top_idx = torch.full((m, k), -1, dtype=torch.int64, device=dev)
    count = torch.zeros(m, dtype=torch.int64, device=dev)
    sum_act = torch.zeros(m, dtype=torch.float64, device=dev)
    max_act = torch.zeros(m, dtype=torch.float32, device=dev)
    for start in range(0, n, chunk_size):
        z = torch.as_tensor(np.asarray(tokens[start:start + chunk_size], dtype=np.float32), device=dev)
        f = sae.feature_activations(z).T.contiguous()  # (m, c)
        active = f > 0
        count += active.sum(dim=1)
        sum_act += f.sum(dim=1, dtype=torch.float64)
        max_act = torch.maximum(max_act, f.max(dim=1).values)
        rows = torch.arange(start, start + f.shape[1], device=dev).expand(m, -1)
        # Inactive entries must never displace a real one: give them -1 (below every f > 0,
        # and below the 0 of empty slots) and index -1.
        cand_act = torch.cat([top_act, torch.where(active, f, torch.full_like(f, -1.0))], dim=1)
        cand_idx = torch.cat([top_idx, torch.where(active, rows, torch.full_like(rows, -1))], dim=1)
        # A stable descending sort keeps earlier images first among equal activations; the
        # running top-k precedes the chunk, and its rows are earlier images.
        order = torch.sort(cand_act, dim=1, descending=True, stable=True).indices[:, :k]
        top_act = torch.gather(cand_act, 1, order).clamp_min(0.0)
        top_idx = torch.gather(cand_idx, 1, order)
    top_act = torch.where(top_idx >= 0, top_act, torch.zeros_like(top_act))
    return {"top_index": top_idx.cpu().numpy(), "top_act": top_act.cpu().numpy(),
            "count": count.cpu().numpy(), "sum_act": sum_act.cpu().numpy(), "max_act": max_act.cpu().numpy()}


def build_index(
    sae: Any,
    tokens: np.ndarray,
    samples: Sequence[Any],
    k: int = 10,
    chunk_size: int = 1024,
    device: str | torch.device = "cpu",
    meta: dict[str, Any] | None = None,
) -> FeatureIndex:
    """The feature index of ``sae`` over training ``samples`` (bench Sample records) and
    their CLS ``tokens`` (aligned row by row)."""
    if len(samples) != tokens.shape[0]:
        raise DataError(f"{len(samples)} samples but {tokens.shape[0]} tokens; they must be aligned")
    r = streaming_topk(sae, tokens, k=k, chunk_size=chunk_size, device=device)
    used = np.unique(r["top_index"][r["top_index"] >= 0])
    # Store only the samples some feature points at, and renumber the rows to that table.
    remap = np.full(len(samples), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    top_index = np.where(r["top_index"] >= 0, remap[np.maximum(r["top_index"], 0)], -1)
    table = pd.DataFrame({
        "train_row": used.astype(np.int64),
        "dicom_id": [samples[i].dicom_id for i in used],
        "study_id": [samples[i].study_id for i in used],
        "image_path": [str(samples[i].image_path) for i in used],
        "report": [samples[i].findings for i in used],
    })
    count = r["count"]
    n = tokens.shape[0]
    mean_active = np.divide(r["sum_act"], count, out=np.zeros(len(count)), where=count > 0)
    idx = FeatureIndex(top_index.astype(np.int64), r["top_act"].astype(np.float32), count / n,
                       r["max_act"].astype(np.float32), mean_active, n, table, dict(meta or {}))
    log.info("feature index: %d features, k=%d, %d images; %d features never fire",
             idx.d_sae, k, n, int((count == 0).sum()))
    return idx
