"""Scoring: predictions -> per-sample rows -> corpus values with study-level intervals.

One code path for every predictions file, ours (`score_run`) or a user's (`score_input`): references are
joined by sample id from the dataset (or, for a file that carries its own, from the file),
every metric runs once over all samples, and the bootstrap re-aggregates resampled STUDIES
(all images of a study together; docs/metrics.md, Bootstrap).

Failures are never scores. A metric that cannot run is recorded as unavailable with its
reason and remedy, never as 0 and never dropped. Samples a metric marks as failed (its
`failed_column()`) are left out of its aggregate and counted; unreadable judgements
(`failures()`) are counted beside the value.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.errors import BenchError, DataError, MetricUnavailable, UnknownNameError
from bench.metrics.base import Metric
from bench.metrics.registry import get_metric, metric_names
from bench.predictions import PredictionRecord, read_predictions

log = logging.getLogger(__name__)

# The paper's Table 1 metrics plus the offline rule-based labeller and the planted-truth F1
# (unavailable, with its reason, on data that is not a phantom), in table order.
DEFAULT_METRICS = ("radfact", "bleu", "rouge", "meteor", "rger", "chexbert", "chexpert-rules", "phantom-truth")
CI = 0.95
FLAG_FAILED_FRACTION = 0.05  # above this share of failures a value is flagged in tables


@dataclass
class PreparedMetric:
    """A metric built and checked before any generation: ready, or unavailable with the reason."""

    name: str
    metric: Metric
    unavailable: MetricUnavailable | None = None


def prepare_metrics(names: Sequence[str], options: dict[str, dict[str, str]] | None = None,
                    cache_root: Path | None = None) -> list[PreparedMetric]:
    """Build every metric, validate its options and run its check(), in the first seconds of a run.

    Unknown names, options addressed to a metric that is not requested, and bad option values
    are errors; a metric that cannot run here is returned as unavailable with its reason."""
    options = options or {}
    known = metric_names()
    for name in names:
        if name not in known:
            raise UnknownNameError("metric", name, known)
    if len(set(names)) != len(names):
        raise BenchError(f"metric listed twice: {sorted({n for n in names if list(names).count(n) > 1})}")
    stray = sorted(set(options) - set(names))
    if stray:
        raise BenchError(f"--metric-opt for metric(s) not in this run: {', '.join(stray)} "
                         f"(metrics in this run: {', '.join(names)})")
    prepared = []
    for name in names:
        metric = get_metric(name, options.get(name), cache_root)
        try:
            metric.check()
            prepared.append(PreparedMetric(name, metric))
        except MetricUnavailable as exc:
            log.warning("metric %s unavailable: %s", name, exc)
            prepared.append(PreparedMetric(name, metric, exc))
    return prepared


@dataclass
class ScoreResult:
    rows: pd.DataFrame  # one row per sample: "id", "study_id" plus every metric's per-sample columns
    metrics: dict[str, dict[str, Any]]  # name -> {"status", "values" | "reason", "metadata", ...}
    bootstrap: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    empty_predictions: list[str] = field(default_factory=list)
    fallbacks: int = 0  # predictions whose provenance says they fell back from the system's own method


def score(ids: Sequence[str], references: Sequence[str], predictions: Sequence[str],
          metrics: Sequence[str | Metric | PreparedMetric] = DEFAULT_METRICS, n_bootstrap: int = 1000,
          seed: int = 0, study_ids: Sequence[str] | None = None,
          metric_options: dict[str, dict[str, Any]] | None = None,
          cache_root: Path | None = None, data: dict[str, Any] | None = None) -> ScoreResult:
    """Score aligned lists. `study_ids` (one per sample) makes the bootstrap resample studies;
    without them every sample is its own study. `data` describes the dataset the samples come
    from (root, name, fingerprint, split, unit), for metrics that read more than the references."""
    if not (len(ids) == len(references) == len(predictions)):
        raise ValueError("ids, references and predictions must have the same length")
    if len(set(ids)) != len(ids):
        raise ValueError("sample ids must be unique")
    if study_ids is not None and len(study_ids) != len(ids):
        raise ValueError("study_ids must have one entry per sample")
    prepared = _as_prepared(metrics, metric_options, cache_root)
    clusters = list(study_ids) if study_ids is not None else list(ids)
    rows = pd.DataFrame({"id": list(ids), "study_id": clusters})
    boot = {"unit": "study" if study_ids is not None else "sample", "resamples": n_bootstrap, "seed": seed,
            "ci": CI, "n_studies": len(set(clusters))}
    result = ScoreResult(rows, {}, boot)
    result.empty_predictions = [i for i, p in zip(ids, predictions) if not p.strip()]
    if result.empty_predictions:
        log.warning("%d empty predictions (scored as written: they earn no credit)", len(result.empty_predictions))
    for pm in prepared:
        t0 = time.perf_counter()
        entry = _score_one(pm, list(ids), list(references), list(predictions), clusters, n_bootstrap, seed, boot,
                           data)
        result.timings[f"{pm.name}_s"] = time.perf_counter() - t0
        if "rows" in entry:
            per = entry.pop("rows")
            result.rows = pd.concat([result.rows, per], axis=1)
        result.metrics[pm.name] = entry
    return result


def _as_prepared(metrics: Sequence[str | Metric | PreparedMetric], options: dict[str, dict[str, Any]] | None,
                 cache_root: Path | None) -> list[PreparedMetric]:
    names = [m for m in metrics if isinstance(m, str)]
    built = {p.name: p for p in prepare_metrics(names, {k: v for k, v in (options or {}).items() if k in names},
                                                cache_root)} if names else {}
    out = []
    for m in metrics:
        if isinstance(m, PreparedMetric):
            out.append(m)
        elif isinstance(m, Metric):
            out.append(PreparedMetric(m.name, m))
        else:
            out.append(built[m])
    return out


def _unavailable(pm: PreparedMetric, exc: MetricUnavailable) -> dict[str, Any]:
    return {"status": "unavailable", "reason": exc.reason, "remedy": exc.remedy,
            "metadata": pm.metric.metadata(), "config": _config(pm.metric)}


def _signature(metric: Metric, boot: dict[str, Any]) -> dict[str, Any]:
    from bench.signatures import bootstrap_setting, format_signature

    sig = {**metric.signature(), "boot": bootstrap_setting(boot)}
    return {"settings": sig, "text": format_signature(sig)}


def _config(metric: Metric) -> dict[str, Any]:
    try:
        return metric.config()
    except Exception as exc:  # describing a metric must never lose its scores
        return {"name": metric.name, "config_error": f"{type(exc).__name__}: {exc}"}


def _score_one(pm: PreparedMetric, ids: list[str], references: list[str], predictions: list[str],
               clusters: list[str], n_bootstrap: int, seed: int, boot: dict[str, Any],
               data: dict[str, Any] | None) -> dict[str, Any]:
    if pm.unavailable is not None:
        return _unavailable(pm, pm.unavailable)
    metric = pm.metric
    try:
        per = metric.per_sample_for(ids, references, predictions, data)
    except MetricUnavailable as exc:  # e.g. discovered only when loading weights
        log.warning("metric %s unavailable: %s", pm.name, exc)
        return _unavailable(pm, exc)
    if len(per) != len(references):
        raise RuntimeError(f"metric {pm.name} returned {len(per)} rows for {len(references)} samples")
    per = per.reset_index(drop=True)
    failed_col = metric.failed_column()
    failed = per[failed_col].fillna(False).astype(bool).to_numpy() if failed_col in per.columns \
        else np.zeros(len(per), dtype=bool)
    if failed.all():
        return _unavailable(pm, MetricUnavailable(f"every sample failed ({len(per)} of {len(per)})",
                                                  "see the log for the first error"))
    ok_rows = per[~failed].reset_index(drop=True)
    ok_clusters = [c for c, f in zip(clusters, failed) if not f]
    entry: dict[str, Any] = {"status": "ok", "values": _with_intervals(metric, ok_rows, ok_clusters, n_bootstrap,
                                                                        seed),
                             "metadata": metric.metadata(), "config": _config(metric),
                             "signature": _signature(metric, boot),
                             "n_scored": int((~failed).sum()), "n_failed_samples": int(failed.sum())}
    notes = metric.failures(ok_rows)
    if notes is not None:
        entry["failures"] = notes
    share = _failed_share(entry)
    entry["flagged"] = share is not None and share > FLAG_FAILED_FRACTION
    if entry["flagged"]:
        log.warning("metric %s: %.1f%% failures; its value is flagged", pm.name, 100 * share)
    entry["rows"] = per
    return entry


def _failed_share(entry: dict[str, Any]) -> float | None:
    shares = []
    n = entry["n_scored"] + entry["n_failed_samples"]
    if entry["n_failed_samples"]:
        shares.append(entry["n_failed_samples"] / n)
    f = entry.get("failures")
    if f and f.get("of"):
        shares.append(f["failed"] / f["of"])
    return max(shares) if shares else None


def _with_intervals(metric: Metric, per: pd.DataFrame, clusters: list[str], n_bootstrap: int,
                    seed: int) -> dict[str, dict[str, float]]:
    point = metric.aggregate(per)
    if n_bootstrap <= 0:
        return {k: {"value": float(v)} for k, v in point.items()}
    from bench.stats.bootstrap import bootstrap

    intervals = bootstrap(metric, per, n_resamples=n_bootstrap, seed=seed, ci=CI, clusters=clusters)
    out = {}
    for k, v in point.items():
        iv = intervals[k]
        out[k] = {"value": float(v), "median": float(iv.median), "low": float(iv.low), "high": float(iv.high)}
    return out


# -- predictions files ---------------------------------------------------------------

@dataclass
class ScoringInput:
    ids: list[str]
    predictions: list[str]
    references: list[str]
    study_ids: list[str] | None
    source: str  # where the references came from, for the manifest
    dataset: dict[str, Any]  # name, fingerprint, split, unit: what tables group runs by


def join_references(records: list[PredictionRecord], dataset) -> ScoringInput:
    """Predictions joined with the dataset's references and study ids, in the dataset's order.

    Every sample of the dataset must have a prediction; a prediction for an id the dataset
    lacks is an error (it was made from other data)."""
    by_id = {r.id: r for r in records}
    sample_ids = {s.id for s in dataset.samples}
    extra = [i for i in by_id if i not in sample_ids]
    if extra:
        raise DataError(f"{len(extra)} predictions have ids that are not in the {dataset.split} split of "
                        f"{dataset.root} (first: {extra[:3]}); they were made from other data")
    missing = [s.id for s in dataset.samples if s.id not in by_id]
    if missing:
        raise DataError(f"{len(missing)} of {len(dataset.samples)} samples of the {dataset.split} split have no "
                        f"prediction (first: {missing[:3]}); finish the run (`bench generate` resumes) or "
                        "score a file with every sample")
    samples = dataset.samples
    return ScoringInput([s.id for s in samples], [by_id[s.id].prediction for s in samples],
                        [s.findings for s in samples], [s.study_id for s in samples],
                        f"dataset {dataset.name} ({dataset.root}), {dataset.split} split",
                        {"name": dataset.name, "fingerprint": dataset.fingerprint, "split": dataset.split,
                         "unit": dataset.unit, "root": str(dataset.root)})


def references_from_file(records: list[PredictionRecord], path: Path) -> ScoringInput:
    """A user's file that carries its own references (and, optionally, study ids)."""
    if not records:
        raise DataError(f"{path} holds no predictions")
    lacking = [r.id for r in records if r.reference is None]
    if lacking:
        raise DataError(f"{path}: {len(lacking)} lines have no reference (first: {lacking[:3]}); give every line a "
                        "reference, or none and name the dataset the references come from (--data-root/--split)")
    with_study = [r.study_id is not None for r in records]
    if any(with_study) and not all(with_study):
        raise DataError(f"{path}: some lines have a study_id and some do not; give all or none")
    if not any(with_study):
        log.warning("%s has no study ids: each sample is resampled on its own. If several samples share a "
                    "study, add study_id to each line so that intervals resample studies", path)
    digest = hashlib.sha256()
    for r in records:
        digest.update(f"{r.id}\t{r.reference}\n".encode())
    return ScoringInput([r.id for r in records], [r.prediction for r in records],
                        [r.reference or "" for r in records],
                        [r.study_id or "" for r in records] if all(with_study) else None,
                        f"references in {path}",
                        {"name": f"references of {Path(path).name}", "fingerprint": digest.hexdigest()[:16],
                         "split": "", "unit": "sample"})


def aggregate_record(label: str, system: str, inp: ScoringInput, result: ScoreResult) -> dict[str, Any]:
    """aggregate.json: what tables, comparisons and checks read."""
    return {"run": label, "system": system, "dataset": inp.dataset, "n": len(inp.ids),
            "bootstrap": result.bootstrap, "empty_predictions": len(result.empty_predictions),
            "fallbacks": result.fallbacks,
            "metrics": result.metrics}


# -- the score stage -------------------------------------------------------------------

SCORES = "scores.parquet"
AGGREGATE = "aggregate.json"


def score_input(records: list[PredictionRecord], path: Path, data=None) -> ScoringInput:
    """References for a predictions file: the dataset's when `data` (a DataConfig) is given or the
    file carries none; else the file's own."""
    from bench.stages.data import DataConfig, open_context

    if data is None and records and all(r.reference is not None for r in records):
        return references_from_file(records, path)
    _, ds = open_context(data or DataConfig())
    return join_references(records, ds)


def write_scores(out_dir: Path, label: str, system: str, inp: ScoringInput, result: ScoreResult,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """scores.parquet, aggregate.json and the manifest's "score" section in `out_dir`."""
    from bench.manifest import package_versions, write_json
    from bench.stages.generate import update_manifest

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_rows(out_dir / SCORES, result)
    agg = aggregate_record(label, system, inp, result)
    write_json(out_dir / AGGREGATE, agg)
    update_manifest(out_dir, "score", {
        "references": inp.source, "dataset": inp.dataset, "bootstrap": result.bootstrap,
        "metrics": {k: v.get("config") for k, v in result.metrics.items()},
        "empty_predictions": result.empty_predictions, "timings": result.timings,
        "versions": package_versions(), **(extra or {})})
    return agg


def _write_rows(path: Path, result: ScoreResult) -> None:
    """scores.parquet, with every metric's signature in the file's metadata: per-sample values
    carry how they were computed wherever the file goes."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(result.rows, preserve_index=False)
    sigs = {k: v["signature"]["text"] for k, v in result.metrics.items() if "signature" in v}
    meta = {**(table.schema.metadata or {}), b"saerad_bench.signatures": json.dumps(sigs).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)


def score_run(run_dir: Path, metrics: Sequence[PreparedMetric], n_bootstrap: int = 1000, seed: int = 0,
              cache_dir: Path | None = None) -> dict[str, Any]:
    """Score a run directory made by `bench generate`, against references re-read from its dataset."""
    from bench.stages.data import open_run_dataset
    from bench.stages.generate import PREDICTIONS, fallback_count, read_identity, run_lock

    run_dir = Path(run_dir)
    ident = read_identity(run_dir)
    ds = open_run_dataset(ident, run_dir, cache_dir)
    with run_lock(run_dir):
        records = read_predictions(run_dir / PREDICTIONS, torn_tail="drop")
        inp = join_references(records, ds)
        result = score(inp.ids, inp.references, inp.predictions, metrics, n_bootstrap, seed, inp.study_ids,
                       data=inp.dataset)
        result.fallbacks = fallback_count(records)
        return write_scores(run_dir, ident["label"], ident["system"], inp, result)
