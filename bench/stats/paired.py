"""Paired approximate randomisation test between two systems scored on the same samples.

Under the null hypothesis that the systems are interchangeable, which system produced a
given output is arbitrary. So each permutation swaps units between A and B, each with
probability 1/2, re-aggregates both sides and records the difference. The p-value is
(count(|diff_perm| >= |diff_obs|) + 1) / (n_permutations + 1), two-sided, which is never 0
and is exactly 1 for identical systems. Aggregation is the metric's own, so corpus metrics
(BLEU, micro-F1) are tested at the corpus level, not per sample.

The unit that is swapped is the cluster. With `clusters` given (the study of every
sample), the unit is the study: one coin per study decides whether all of its rows
(images) change sides together, because the images of one study are not independent.
Without `clusters` each sample is its own cluster. Rows of B are first aligned to A's
order by sample id; clusters are numbered in order of first appearance in that order, and
the coins are drawn per cluster exactly as they are drawn per sample without clusters. So
an image-level test with clusters and a study-level test (one row per study, same study
order, no clusters) flip the same coins for the same seed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.stats.aggregators import AdditiveMetric, AggregateFn, as_float_dict, cluster_codes, resolve

_CHUNK = 256  # permutations per mask matrix


def _aligned(rows_a: pd.DataFrame, rows_b: pd.DataFrame,
             id_column: str | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.Index]:
    """Both frames in A's sample order, and the sample ids in that order; an error if the ids differ."""

    def ids_of(rows: pd.DataFrame, side: str) -> pd.Index:
        if id_column is None:
            ids = rows.index
        elif id_column in rows.columns:
            ids = pd.Index(rows[id_column])
        else:
            raise BenchError(f"system {side} rows have no {id_column!r} column; pass per-sample rows with "
                             f"sample ids, or id_column=None to align by the DataFrame index")
        if ids.has_duplicates:
            dup = ids[ids.duplicated()].unique()[:3].tolist()
            raise BenchError(f"system {side} has duplicate sample ids {dup}; each sample must appear once")
        return ids

    ids_a, ids_b = ids_of(rows_a, "A"), ids_of(rows_b, "B")
    if set(ids_a) != set(ids_b):
        only_a = sorted(map(str, set(ids_a) - set(ids_b)))[:3]
        only_b = sorted(map(str, set(ids_b) - set(ids_a)))[:3]
        raise BenchError(f"the two systems were scored on different samples (only in A: {only_a}, only in B: "
                         f"{only_b}); a paired test needs both scored on the same sample ids")
    order = pd.Series(np.arange(len(ids_b)), index=ids_b).loc[ids_a].to_numpy()
    return rows_a.reset_index(drop=True), rows_b.iloc[order].reset_index(drop=True), ids_a


def _sample_clusters(clusters: Mapping[Hashable, Hashable] | Sequence[Hashable],
                     ids: pd.Index) -> tuple[np.ndarray, int]:
    """Cluster code of every aligned sample (A's order) and the number of clusters."""
    if isinstance(clusters, Mapping):
        missing = [i for i in ids if i not in clusters]
        if missing:
            raise ValueError(f"clusters has no cluster (study) id for {len(missing)} sample ids, "
                             f"e.g. {sorted(map(str, missing))[:3]}; map every sample id to its study id")
        return cluster_codes([clusters[i] for i in ids], len(ids), what="samples")
    return cluster_codes(clusters, len(ids), what="samples (rows of A)")


def paired_randomization_test(metric_or_aggregate_fn: Any, rows_a: pd.DataFrame, rows_b: pd.DataFrame,
                              n_permutations: int = 10000, seed: int = 0, id_column: str | None = "id",
                              clusters: Mapping[Hashable, Hashable] | Sequence[Hashable] | None = None,
                              alternative: str = "two-sided") -> dict[str, float]:
    """Two-sided p-value per aggregate column for "A and B score the same".

    metric_or_aggregate_fn: a Metric, its bound `aggregate`, or a callable rows -> dict.
    rows_a, rows_b: per-sample rows of the two systems; aligned by `id_column`
    (None: by index). A column whose observed value is NaN on either side gets NaN.
    alternative: "two-sided" (default), "greater" (is A above B?) or "less" (is A below B?):
    the one-sided p-values count permuted differences A - B at least as far in that direction.
    clusters: the study of every sample, so that a study's rows are swapped together.
    Either a mapping from sample id (the `id_column` value, or the index label when
    id_column is None) to study id, which may hold more ids than are tested and does not
    depend on row order; or a sequence of study ids aligned by position with rows_a as
    passed (a Series' index is ignored). None: every sample is its own cluster.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater (A > B) or less (A < B), got {alternative!r}")
    a, b, ids = _aligned(rows_a, rows_b, id_column)
    if len(a) == 0:
        raise ValueError("cannot test two empty sets of per-sample rows")
    codes, n_units = (None, len(a)) if clusters is None else _sample_clusters(clusters, ids)
    aggregate, additive = resolve(metric_or_aggregate_fn)
    val_a, val_b = as_float_dict(aggregate(a)), as_float_dict(aggregate(b))
    observed = {k: val_a[k] - val_b[k] for k in val_a}
    rng = np.random.default_rng(seed)
    if additive is not None:
        diffs = _additive_diffs(additive, a, b, codes, n_units, n_permutations, rng)
    else:
        diffs = _generic_diffs(aggregate, a, b, codes, n_units, n_permutations, rng)
    out = {}
    for k, obs in observed.items():
        if np.isnan(obs):
            out[k] = float("nan")
            continue
        # A small tolerance so that float noise in re-aggregation cannot push an equal
        # difference below the observed one.
        eps = 1e-12 * max(1.0, abs(obs))
        if alternative == "two-sided":
            hits = int(np.sum(np.abs(diffs[k]) >= abs(obs) - eps))
        elif alternative == "greater":  # evidence that A > B: permuted differences as large as observed
            hits = int(np.sum(diffs[k] >= obs - eps))
        else:  # "less": evidence that A < B
            hits = int(np.sum(diffs[k] <= obs + eps))
        out[k] = (hits + 1) / (n_permutations + 1)
    return out


def _masks(n_units: int, n_permutations: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Swap masks, _CHUNK permutations at a time: True where a unit's (sample's or cluster's) rows are swapped."""
    done = 0
    while done < n_permutations:
        r = min(_CHUNK, n_permutations - done)
        yield rng.random((r, n_units)) < 0.5
        done += r


def _generic_diffs(aggregate: AggregateFn, a: pd.DataFrame, b: pd.DataFrame, codes: np.ndarray | None,
                   n_units: int, n_permutations: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(a)
    both = pd.concat([a, b], ignore_index=True)  # rows 0..n-1 are A's, n..2n-1 B's
    base = np.arange(n)
    diffs: dict[str, list[float]] = {}
    for masks in _masks(n_units, n_permutations, rng):
        if codes is not None:
            masks = masks[:, codes]  # a cluster's coin decides for every one of its rows
        for m in masks:
            pa = aggregate(both.take(base + n * m).reset_index(drop=True))
            pb = aggregate(both.take(base + n * ~m).reset_index(drop=True))
            for k in pa:
                diffs.setdefault(k, []).append(float(pa[k]) - float(pb[k]))
    return {k: np.asarray(v) for k, v in diffs.items()}


def _additive_diffs(metric: AdditiveMetric, a: pd.DataFrame, b: pd.DataFrame, codes: np.ndarray | None,
                    n_units: int, n_permutations: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    sa = np.asarray(metric.sufficient_statistics(a), dtype=float)
    sb = np.asarray(metric.sufficient_statistics(b), dtype=float)
    total_a, delta = sa.sum(0), sb - sa
    total = total_a + sb.sum(0)
    if codes is not None:
        # Swapping a cluster moves the sum of its rows' (sb - sa): sum it once per cluster.
        unit_delta = np.zeros((n_units, delta.shape[1]))
        np.add.at(unit_delta, codes, delta)
        delta = unit_delta
    parts: dict[str, list[np.ndarray]] = {}
    for masks in _masks(n_units, n_permutations, rng):
        # Swapping the units in m moves (sb - sa) of each into A's totals and out of B's.
        perm_a = total_a + masks.astype(float) @ delta
        va, vb = metric.aggregate_totals(perm_a), metric.aggregate_totals(total - perm_a)
        for k in va:
            parts.setdefault(k, []).append(np.asarray(va[k], dtype=float) - np.asarray(vb[k], dtype=float))
    return {k: np.concatenate(v) for k, v in parts.items()}
