"""Metrics whose corpus value is the mean of a per-sample score (BERTScore, SembScore, RaTEScore, RadCliQ).

A subclass produces its per-sample columns and declares, in `means`, which aggregate key is the
mean of which per-sample column. Means are additive: the sufficient statistics of a sample are
(1, its scores), so a bootstrap resample is one matrix product (bench/stats/aggregators.py) and
any multiset of rows re-aggregates exactly. A subclass whose corpus value is a function of means
(RadCliQ reports 1 / mean) overrides `from_means`.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.metrics.base import Metric


class MeanScoresMetric(Metric):
    level = "sample"
    means: ClassVar[Mapping[str, str]]  # aggregate key -> per-sample column it is the mean of

    def _mean_columns(self) -> list[str]:
        return list(self.means.values())

    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self._mean_columns() if c not in rows.columns]
        if missing:
            raise BenchError(f"{self.name}: per-sample rows lack columns {missing}; pass the rows its per_sample() made")
        values = rows[self._mean_columns()].to_numpy(dtype=float)
        return np.column_stack([np.ones(len(values)), values])

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        totals = np.asarray(totals, dtype=float)
        n = totals[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = {key: np.where(n > 0, totals[..., 1 + i] / np.where(n > 0, n, 1), np.nan)
                     for i, key in enumerate(self.means)}
        return self.from_means(means)

    def from_means(self, means: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Corpus values from the means (default: the means themselves)."""
        return means

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        if len(rows) == 0:
            raise BenchError(f"{self.name}: cannot aggregate zero samples")
        return {k: float(v) for k, v in self.aggregate_totals(self.sufficient_statistics(rows).sum(axis=0)).items()}
