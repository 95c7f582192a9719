"""`nn`: the nearest-neighbour baseline of the paper (docs/method.md, Nearest-neighbour baseline).

The findings of the training image whose encoder CLS token is closest in L2 to the test
image's. Tokens come from the shared token cache, so the encoder runs once per image
across all systems that need it.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator, Sequence

import numpy as np

from baselines.nn_search import nearest_neighbours
from bench.data.records import Query, Sample
from bench.errors import BenchError, DataError
from bench.systems.base import Prediction, System

log = logging.getLogger(__name__)


class NearestNeighbourSystem(System):
    name = "nn"
    description = "findings of the nearest training image by encoder CLS token (L2)"
    needs_train = True

    def __init__(self, options=None):
        super().__init__(options)
        self.train_tokens: np.ndarray | None = None
        self.train_samples: list[Sample] = []

    def fit(self, ctx) -> None:
        train = ctx.dataset("train")
        if not train.samples:
            raise DataError("the training split is empty; `nn` needs training images")
        self.train_samples = list(train.samples)
        self.train_tokens = ctx.tokens(train.samples, "train")

    def generate(self, queries: Sequence[Query], ctx) -> Iterator[Prediction]:
        assert self.train_tokens is not None, "fit() first"
        if not queries:
            return
        tokens = ctx.tokens(queries, queries[0].split)
        t0 = time.perf_counter()
        res = nearest_neighbours(tokens, self.train_tokens)
        ctx.timings["nn_search_s"] = time.perf_counter() - t0
        for q, j, d in zip(queries, res.index, res.distance):
            nb = self.train_samples[int(j)]
            yield Prediction(q.id, nb.findings,
                             {"neighbour_dicom_id": nb.dicom_id, "neighbour_study_id": nb.study_id,
                              "distance": float(d)})

    @classmethod
    def compute_parts(cls, manifest: dict) -> list:
        """For `bench compute`: nothing trained; per report, the search's distance products of
        one token with every training token (counted on the meta device)."""
        import torch

        from bench.compute import Part, count_flops

        n_train = int(((manifest.get("datasets") or {}).get("train") or {}).get("n", 0))
        dim = int(manifest.get("encoder_dim") or 0)  # bench.compute adds it from the run's encoder
        if not dim:
            raise BenchError("nn's search cannot be counted without the run's encoder (token width)")
        flops = count_flops(lambda: torch.empty(1, dim, device="meta") @ torch.empty(dim, n_train, device="meta"))
        return [Part("search", 0, 0, float(flops), 0.0, f"exact L2 search over {n_train:,} training tokens")]

    def config(self) -> dict:
        return {**super().config(), "metric": "l2", "search": "exact, chunked matmul + float64 re-rank"}

