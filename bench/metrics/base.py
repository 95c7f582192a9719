"""The metric interface.

A metric is computed in two steps so that the bootstrapper can resample studies without
re-running anything expensive (DESIGN.md §3, Bootstrap):

1. `per_sample(references, predictions)` runs once and returns a DataFrame with one row per
   sample: the sample-level score(s) a reader would look at, plus whatever sufficient
   statistics the corpus-level value needs (n-gram counts for BLEU, label vectors for
   CheXbert micro-F1, ...). Column names are prefixed with the metric name.
2. `aggregate(rows)` turns any multiset of those rows (the full set, or a bootstrap
   resample with repeats) into the corpus-level values, keyed by column name of the
   leaderboard (e.g. {"bleu4": 0.031}).

Scores are fractions in [0, 1]; tables multiply by 100 as papers do.
A metric that cannot run raises `bench.errors.MetricUnavailable` from `check()`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

import pandas as pd


class Metric(ABC):
    name: ClassVar[str]  # registry name, e.g. "bleu"
    columns: ClassVar[tuple[str, ...]]  # aggregate keys, in table order, e.g. ("bleu4",)
    description: ClassVar[str] = ""  # implementation and normalisation, shown in docs and manifests

    def check(self) -> None:
        """Raise MetricUnavailable if this metric cannot run here (weights, java, endpoint)."""

    @abstractmethod
    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        """One row per sample, in input order; columns prefixed with `self.name`."""

    @abstractmethod
    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        """Corpus-level values from a multiset of per-sample rows."""

    def config(self) -> dict:
        """Everything that determines this metric's numbers, for the run manifest."""
        return {"name": self.name, "description": self.description}
