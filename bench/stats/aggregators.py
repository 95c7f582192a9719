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
"""

from __future__ import annotations

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
