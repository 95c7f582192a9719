"""SembScore (metric "sembscore"): cosine similarity of the CheXbert embeddings of two reports.

As CXR-Report-Metric defines it (its `semb_score`, one of RadCliQ's inputs; reported by ReXrank):
each report is run through CheXbert's BERT exactly as for labelling (the same text cleaning,
[CLS] ... [SEP], cut to 512 tokens), the last layer's [CLS] state is the report's embedding, and
the per-pair score is their cosine similarity; the corpus value is the mean over pairs.

It reuses our CheXbert (bench.metrics.chexbert): the same weights, tokenizer, batching and
options, and the same persistent cache file (<cache>/chexbert/labels.sqlite) keyed the same
way (the CheXbert fingerprint and the SHA-256 of the text), in a table of its own: a test
split's references are embedded once for every system, and a re-score embeds nothing.
Embeddings are stored as the exact float32 bytes (base64), so a cached embedding is the
computed one bit for bit.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from bench.metrics.chexbert import DEFAULT_BATCH, CheXbertMetric, CheXbertModelOptions
from bench.metrics.means import MeanScoresMetric


def _pack(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity, in float32 as CXR-Report-Metric computes it."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


class SembScoreMetric(MeanScoresMetric):
    name = "sembscore"
    columns = ("sembscore",)
    headers = {"sembscore": "SembScore"}
    means = {"sembscore": "sembscore"}
    description = ("SembScore (CXR-Report-Metric's semb_score): cosine similarity of the last-layer [CLS] states of "
                   "CheXbert (StanfordAIMI/RRG_scorers chexbert.pth) for reference and prediction, mean over samples")

    class Options(CheXbertModelOptions):  # CheXbert's own options, and:
        embedding_cache: bool = True  # keep embeddings in <cache root>/chexbert/labels.sqlite

    def __init__(self, weights_path: str | Path | None = None, tokenizer_path: str | Path | None = None,
                 device: str = "cpu", batch_size: int = DEFAULT_BATCH, cache_dir: str | Path | None = None,
                 embedding_cache: bool = True, label_cache_dir: str | Path | None = None):
        self.chexbert = CheXbertMetric(weights_path, tokenizer_path, device, batch_size, cache_dir,
                                       label_cache=embedding_cache, label_cache_dir=label_cache_dir)

    def attach_cache(self, cache_root: Path | None) -> None:
        super().attach_cache(cache_root)
        self.chexbert.attach_cache(cache_root)

    def check(self) -> None:
        self.chexbert.check()

    def embed(self, reports: Sequence[str]) -> np.ndarray:
        """(n, hidden) embeddings; each distinct text embedded once, and cached when enabled."""
        packed = self.chexbert.per_text(reports, "embeddings", lambda batch: [
            _pack(v) for v in self.chexbert.labeller().embed(batch)], "sembscore")
        return np.stack([_unpack(v) for v in packed]) if packed else np.zeros((0, 0), dtype=np.float32)

    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        if len(references) != len(predictions):
            raise ValueError(f"sembscore: {len(references)} references but {len(predictions)} predictions")
        emb = self.embed(list(references) + list(predictions))
        n = len(references)
        scores = cosine(emb[:n], emb[n:]) if n else np.zeros(0, dtype=np.float32)
        return pd.DataFrame({"sembscore": scores.astype(np.float64)})

    def signature_settings(self) -> dict:
        return {"model": f"chexbert-{self.chexbert.fingerprint()[:12]}", "emb": "cls-last", "trunc": 512}

    def config(self) -> dict:
        cfg = super().config()
        cfg["chexbert"] = self.chexbert.config()
        return cfg
