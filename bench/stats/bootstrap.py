"""Bootstrap confidence intervals over per-sample metric rows, resampling studies.

Per-sample rows are computed once; each resample draws units with replacement and
re-aggregates the drawn rows with the metric's own `aggregate`. Because aggregation works
on any multiset of rows (repeats included), this is right for corpus metrics such as BLEU
or micro-F1 as well as for means.

The unit of resampling is the cluster. With `clusters` given (one study id per row), the
unit is the study: a resample draws as many studies as there are, with replacement, and
takes every row (image) of each drawn study, as often as the study was drawn. The images
of one study are not independent samples, and resampling them one by one would make the
intervals too narrow. Without `clusters` each row is its own cluster.

Clusters are numbered in order of first appearance in `clusters`, and the resample draws
are cluster numbers drawn exactly as row numbers are drawn without clusters. So an
image-level run with clusters and a study-level run (one row per study, in the same study
order, no clusters) see the same studies in every resample for the same seed.

The reported interval is the percentile interval of the resampled values; the median of
the resampled values is reported beside the value on all rows. All randomness comes from
one seeded numpy Generator: the same seed, rows, clusters and n_resamples give the same
numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.stats.aggregators import AdditiveMetric, as_float_dict, cluster_codes, resolve

log = logging.getLogger(__name__)

# Resample-count matrices are built this many resamples at a time, to bound memory
# (chunk x n_clusters int64) on large test sets.
_CHUNK = 256


@dataclass(frozen=True)
class Interval:
    value: float  # aggregate over all rows
    median: float  # median of the bootstrap distribution
    low: float  # lower percentile bound, e.g. 2.5th for ci=0.95
    high: float  # upper percentile bound


def resample_indices(n_units: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_units) unit (row or cluster) indices drawn with replacement."""
    return rng.integers(0, n_units, size=(n_resamples, n_units))


def _counts(idx: np.ndarray, n_units: int) -> np.ndarray:
    """How often each unit appears in each resample: (resamples, n_units) from an index matrix."""
    r = idx.shape[0]
    flat = (idx + np.arange(r)[:, None] * n_units).ravel()
    return np.bincount(flat, minlength=r * n_units).reshape(r, n_units)


class _ClusterRows:
    """Row indices of every cluster, laid out so that a drawn cluster list expands to rows."""

    def __init__(self, codes: np.ndarray, n_clusters: int):
        # A stable sort keeps each cluster's rows in their original order.
        self.members = np.argsort(codes, kind="stable")
        self.sizes = np.bincount(codes, minlength=n_clusters)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    def rows_of(self, drawn: np.ndarray) -> np.ndarray:
        """Row indices of the drawn clusters, each cluster's rows once per draw."""
        sizes = self.sizes[drawn]
        total = int(sizes.sum())
        # Position of each output row within its cluster: 0..size-1 per drawn cluster.
        within = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return self.members[np.repeat(self.starts[drawn], sizes) + within]


def _check_inputs(rows: pd.DataFrame, n_resamples: int,
                  clusters: Sequence[Hashable] | None) -> tuple[np.ndarray | None, int]:
    """Validate; the cluster code of every row (None: rows are their own clusters) and the unit count."""
    if len(rows) == 0:
        raise ValueError("cannot bootstrap an empty set of per-sample rows")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if clusters is None:
        return None, len(rows)
    return cluster_codes(clusters, len(rows), what="rows")


def bootstrap_distribution(metric_or_aggregate_fn: Any, rows: pd.DataFrame, n_resamples: int = 1000,
                           seed: int = 0, clusters: Sequence[Hashable] | None = None) -> dict[str, np.ndarray]:
    """The resampled aggregate values, {column: (n_resamples,) array}.

    clusters: one hashable cluster (study) id per row, aligned with the rows by position
    (a Series' index is ignored). Each resample then draws n_clusters clusters with
    replacement, numbered in order of first appearance, and takes all rows of each drawn
    cluster. None: every row is its own cluster.
    """
    codes, n_units = _check_inputs(rows, n_resamples, clusters)
    return _distribution(metric_or_aggregate_fn, rows, codes, n_units, n_resamples, seed)


def _distribution(metric_or_aggregate_fn: Any, rows: pd.DataFrame, codes: np.ndarray | None, n_units: int,
                  n_resamples: int, seed: int) -> dict[str, np.ndarray]:
    """`bootstrap_distribution` on checked input: codes are the rows' cluster numbers (None: rows)."""
    aggregate, additive = resolve(metric_or_aggregate_fn)
    rng = np.random.default_rng(seed)
    rows = rows.reset_index(drop=True)
    if additive is not None:
        return _additive_distribution(additive, rows, codes, n_units, n_resamples, rng)
    expand = None if codes is None else _ClusterRows(codes, n_units)
    values: dict[str, list[float]] = {}
    for idx in _index_chunks(n_units, n_resamples, rng):
        for sample in idx:
            take = sample if expand is None else expand.rows_of(sample)
            for k, v in aggregate(rows.take(take).reset_index(drop=True)).items():
                values.setdefault(k, []).append(float(v))
    return {k: np.asarray(v) for k, v in values.items()}


def _index_chunks(n_units: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Resample index matrices, _CHUNK resamples at a time; both paths draw exactly these."""
    done = 0
    while done < n_resamples:
        r = min(_CHUNK, n_resamples - done)
        yield resample_indices(n_units, r, rng)
        done += r


def _additive_distribution(metric: AdditiveMetric, rows: pd.DataFrame, codes: np.ndarray | None, n_units: int,
                           n_resamples: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    stats = np.asarray(metric.sufficient_statistics(rows), dtype=float)  # (n_rows, k)
    if codes is not None:
        # A resample's totals are sums over its drawn clusters, so sum each cluster's rows once.
        unit_stats = np.zeros((n_units, stats.shape[1]))
        np.add.at(unit_stats, codes, stats)
        stats = unit_stats
    parts: dict[str, list[np.ndarray]] = {}
    # Same draws, in the same order, as the generic path: both give identical numbers.
    for idx in _index_chunks(n_units, n_resamples, rng):
        totals = _counts(idx, n_units) @ stats  # (r, k)
        for k, v in metric.aggregate_totals(totals).items():
            parts.setdefault(k, []).append(np.asarray(v, dtype=float).reshape(len(idx)))
    return {k: np.concatenate(v) for k, v in parts.items()}


def bootstrap(metric_or_aggregate_fn: Any, rows: pd.DataFrame, n_resamples: int = 1000, seed: int = 0,
              ci: float = 0.95, clusters: Sequence[Hashable] | None = None) -> dict[str, Interval]:
    """Value, bootstrap median and percentile interval for every aggregate column.

    metric_or_aggregate_fn: a Metric, its bound `aggregate`, or any callable
    rows -> {column: value}. clusters: one study id per row, aligned by position; when
    given, studies rather than rows are resampled (see `bootstrap_distribution`). The
    value is the aggregate over all rows, each once. Resamples whose value is NaN (e.g. a
    mean over an empty subset) are left out of the median and interval, with a warning.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    # Checked before the point value, so that bad input fails with this error and not
    # with whatever the metric's aggregate makes of it.
    codes, n_units = _check_inputs(rows, n_resamples, clusters)
    aggregate, _ = resolve(metric_or_aggregate_fn)
    point = as_float_dict(aggregate(rows.reset_index(drop=True)))
    dist = _distribution(metric_or_aggregate_fn, rows, codes, n_units, n_resamples, seed)
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
