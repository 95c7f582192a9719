"""Scoring: predictions -> per-sample rows -> corpus values with bootstrap intervals.

Shared by `bench run` and `bench score`. Each metric runs once over all samples; the
bootstrap then re-aggregates resampled rows (DESIGN.md §3). A metric that cannot run is
recorded as unavailable with its reason and remedy, never as 0 and never dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

from bench.errors import MetricUnavailable
from bench.metrics.registry import get_metric

log = logging.getLogger(__name__)

# The paper's Table 1 metrics plus the offline rule-based labeller, in table order.
DEFAULT_METRICS = ("radfact", "bleu", "rouge", "meteor", "rger", "chexbert", "chexpert-rules")


@dataclass
class ScoreResult:
    rows: pd.DataFrame  # one row per sample: "id" plus every metric's per-sample columns
    metrics: dict[str, dict[str, Any]]  # name -> {"status", "values" | "reason", ...}
    timings: dict[str, float] = field(default_factory=dict)
    empty_predictions: list[str] = field(default_factory=list)


def score(ids: Sequence[str], references: Sequence[str], predictions: Sequence[str],
          metric_names: Sequence[str] = DEFAULT_METRICS, n_bootstrap: int = 1000, seed: int = 0,
          metric_options: dict[str, dict[str, Any]] | None = None) -> ScoreResult:
    if not (len(ids) == len(references) == len(predictions)):
        raise ValueError("ids, references and predictions must have the same length")
    if len(set(ids)) != len(ids):
        raise ValueError("sample ids must be unique")
    rows = pd.DataFrame({"id": list(ids)})
    result = ScoreResult(rows, {})
    result.empty_predictions = [i for i, p in zip(ids, predictions) if not p.strip()]
    if result.empty_predictions:
        log.warning("%d empty predictions (scored as written: they earn no credit)", len(result.empty_predictions))
    for name in metric_names:
        metric = get_metric(name, **(metric_options or {}).get(name, {}))
        try:
            metric.check()
        except MetricUnavailable as exc:
            log.warning("metric %s unavailable: %s", name, exc)
            result.metrics[name] = {"status": "unavailable", "reason": exc.reason, "remedy": exc.remedy,
                                    "columns": list(metric.columns), "config": metric.config()}
            continue
        t0 = time.perf_counter()
        try:
            per = metric.per_sample(list(references), list(predictions))
        except MetricUnavailable as exc:  # e.g. discovered only when loading weights
            result.metrics[name] = {"status": "unavailable", "reason": exc.reason, "remedy": exc.remedy,
                                    "columns": list(metric.columns), "config": metric.config()}
            continue
        if len(per) != len(ids):
            raise RuntimeError(f"metric {name} returned {len(per)} rows for {len(ids)} samples")
        per = per.reset_index(drop=True)
        values = _with_intervals(metric, per, n_bootstrap, seed)
        result.timings[f"{name}_s"] = time.perf_counter() - t0
        result.rows = pd.concat([result.rows, per], axis=1)
        result.metrics[name] = {"status": "ok", "values": values, "columns": list(metric.columns),
                                "config": metric.config()}
    return result


def _with_intervals(metric, per: pd.DataFrame, n_bootstrap: int, seed: int) -> dict[str, dict[str, float]]:
    point = metric.aggregate(per)
    if n_bootstrap <= 0:
        return {k: {"value": float(v)} for k, v in point.items()}
    from bench.stats.bootstrap import bootstrap

    intervals = bootstrap(metric.aggregate, per, n_resamples=n_bootstrap, seed=seed)
    out = {}
    for k, v in point.items():
        iv = intervals[k]
        out[k] = {"value": float(v), "median": float(iv.median), "low": float(iv.low), "high": float(iv.high)}
    return out
