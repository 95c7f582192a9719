"""How the resamplers turn a multiset of per-sample rows into corpus values.

Two kinds of aggregator are accepted:

- any callable `rows -> {column: value}` (e.g. `Metric.aggregate`); the resamplers then
  build each resampled DataFrame and call it, which is always correct but costs a pandas
  call per resample;
- an *additive* metric: one whose corpus values depend on the rows only through the
  column sums of a per-sample statistics matrix. It exposes
  `sufficient_statistics(rows) -> (n, k) array` and
  `aggregate_totals(totals: (..., k) array) -> {column: (...) array}`.
  A bootstrap resample is then a vector of sample counts w and its totals are w @ S, so
  a thousand resamples are one matrix product. Micro/macro F1, means, BLEU's clipped
  n-gram counts and lengths are all additive.

A bound method of an additive metric (`metric.aggregate`) takes the fast path as well.

The resamplers' unit is a cluster of rows (a study and its images); `cluster_codes` numbers
the clusters of a row-aligned id sequence in order of first appearance.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import pandas as pd

AggregateFn = Callable[[pd.DataFrame], dict[str, float]]


@runtime_checkable
class AdditiveMetric(Protocol):
    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray: ...

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]: ...


def resolve(metric_or_aggregate_fn: Any) -> tuple[AggregateFn, AdditiveMetric | None]:
    """The aggregate callable and, when the metric is additive, the metric for the fast path."""
    owner = getattr(metric_or_aggregate_fn, "__self__", None)
    if isinstance(metric_or_aggregate_fn, AdditiveMetric) and hasattr(metric_or_aggregate_fn, "aggregate"):
        return metric_or_aggregate_fn.aggregate, metric_or_aggregate_fn
    if owner is not None and isinstance(owner, AdditiveMetric) and \
            getattr(metric_or_aggregate_fn, "__name__", "") == "aggregate":
        return metric_or_aggregate_fn, owner
    if hasattr(metric_or_aggregate_fn, "aggregate") and callable(metric_or_aggregate_fn.aggregate):
        return metric_or_aggregate_fn.aggregate, None
    if callable(metric_or_aggregate_fn):
        return metric_or_aggregate_fn, None
    raise TypeError(f"expected a Metric or a callable rows -> dict, got {type(metric_or_aggregate_fn).__name__}")


def as_float_dict(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


def cluster_codes(clusters: Sequence[Hashable], n_rows: int, what: str = "rows") -> tuple[np.ndarray, int]:
    """(codes, n_clusters): each row's cluster number, clusters numbered by first appearance.

    clusters: one hashable id per row, aligned by position (a Series' index is ignored).
    Errors (ValueError) for a length other than n_rows, for a string or mapping instead of
    a sequence of ids, and for a missing (None/NaN) id, which would silently be a cluster of
    its own or be dropped.
    """
    if isinstance(clusters, (str, bytes)) or isinstance(clusters, Mapping):
        raise ValueError(f"clusters must be a sequence of cluster (study) ids, one per row, "
                         f"got a {type(clusters).__name__}")
    # An object Series keeps tuple ids whole, where numpy would make them a 2-D array.
    ids = pd.Series(list(clusters), dtype=object)
    if len(ids) != n_rows:
        raise ValueError(f"clusters has {len(ids)} ids but there are {n_rows} {what}; "
                         f"pass one cluster (study) id per row, in row order")
    codes, uniques = pd.factorize(ids, sort=False)  # sort=False: numbered by first appearance
    if (codes < 0).any():
        first = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(f"cluster id of row {first} is missing ({ids.iloc[first]!r}); every row needs a study id")
    return codes.astype(np.int64), len(uniques)
