"""Bootstrap confidence intervals over studies (DESIGN.md §3, Bootstrap).

Per-sample rows are computed once; each resample draws n rows with replacement and
re-aggregates them with the metric's own `aggregate`. Because aggregation works on any
multiset of rows (repeats included), this is right for corpus metrics such as BLEU or
micro-F1 as well as for means. The reported interval is the percentile interval of the
resampled values; the median of the resampled values is reported beside the value on all
rows. All randomness comes from one seeded numpy Generator: the same seed, rows and
n_resamples give the same numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.stats.aggregators import AdditiveMetric, as_float_dict, resolve

log = logging.getLogger(__name__)

# Resample-count matrices are built this many resamples at a time, to bound memory
# (chunk x n int64) on large test sets.
_CHUNK = 256


@dataclass(frozen=True)
class Interval:
    value: float  # aggregate over all rows
    median: float  # median of the bootstrap distribution
    low: float  # lower percentile bound, e.g. 2.5th for ci=0.95
    high: float  # upper percentile bound


def resample_indices(n_rows: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_rows) row indices drawn with replacement."""
    return rng.integers(0, n_rows, size=(n_resamples, n_rows))


def _counts(idx: np.ndarray, n_rows: int) -> np.ndarray:
    """How often each row appears in each resample: (resamples, n_rows) from an index matrix."""
    r = idx.shape[0]
    flat = (idx + np.arange(r)[:, None] * n_rows).ravel()
    return np.bincount(flat, minlength=r * n_rows).reshape(r, n_rows)


def bootstrap_distribution(metric_or_aggregate_fn: Any, rows: pd.DataFrame, n_resamples: int = 1000,
                           seed: int = 0) -> dict[str, np.ndarray]:
    """The resampled aggregate values, {column: (n_resamples,) array}."""
    if len(rows) == 0:
        raise ValueError("cannot bootstrap an empty set of per-sample rows")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    aggregate, additive = resolve(metric_or_aggregate_fn)
    rng = np.random.default_rng(seed)
    n = len(rows)
    rows = rows.reset_index(drop=True)
    if additive is not None:
        return _additive_distribution(additive, rows, n_resamples, rng)
    values: dict[str, list[float]] = {}
    for idx in _index_chunks(n, n_resamples, rng):
        for sample in idx:
            for k, v in aggregate(rows.take(sample).reset_index(drop=True)).items():
                values.setdefault(k, []).append(float(v))
    return {k: np.asarray(v) for k, v in values.items()}


def _index_chunks(n_rows: int, n_resamples: int, rng: np.random.Generator):
    """Resample index matrices, _CHUNK resamples at a time; both paths draw exactly these."""
    done = 0
    while done < n_resamples:
        r = min(_CHUNK, n_resamples - done)
        yield resample_indices(n_rows, r, rng)
        done += r


def _additive_distribution(metric: AdditiveMetric, rows: pd.DataFrame, n_resamples: int,
                           rng: np.random.Generator) -> dict[str, np.ndarray]:
    stats = np.asarray(metric.sufficient_statistics(rows), dtype=float)  # (n, k)
    n = len(rows)
    parts: dict[str, list[np.ndarray]] = {}
    # Same draws, in the same order, as the generic path: both give identical numbers.
    for idx in _index_chunks(n, n_resamples, rng):
        totals = _counts(idx, n) @ stats  # (r, k)
        for k, v in metric.aggregate_totals(totals).items():
            parts.setdefault(k, []).append(np.asarray(v, dtype=float).reshape(len(idx)))
    return {k: np.concatenate(v) for k, v in parts.items()}


def bootstrap(metric_or_aggregate_fn: Any, rows: pd.DataFrame, n_resamples: int = 1000, seed: int = 0,
              ci: float = 0.95) -> dict[str, Interval]:
    """Value, bootstrap median and percentile interval for every aggregate column.

    metric_or_aggregate_fn: a Metric, its bound `aggregate`, or any callable
    rows -> {column: value}. Resamples whose value is NaN (e.g. a mean over an empty
    subset) are left out of the median and interval, with a warning.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    aggregate, _ = resolve(metric_or_aggregate_fn)
    point = as_float_dict(aggregate(rows.reset_index(drop=True)))
    dist = bootstrap_distribution(metric_or_aggregate_fn, rows, n_resamples=n_resamples, seed=seed)
    alpha = (1 - ci) / 2
    out: dict[str, Interval] = {}
    for k, value in point.items():
        d = dist[k]
        finite = d[~np.isnan(d)]
        if len(finite) < len(d):
            log.warning("bootstrap: %d of %d resamples of %s are NaN and were left out", len(d) - len(finite), len(d), k)
        if len(finite) == 0:
            out[k] = Interval(value, float("nan"), float("nan"), float("nan"))
            continue
        low, median, high = np.quantile(finite, [alpha, 0.5, 1 - alpha])
        out[k] = Interval(value, float(median), float(low), float(high))
    return out
