"""The runs a reader study reads: predictions, identity, signatures, per-report metric values.

Everything is read through the harness's own stage code (run identity, predictions files,
`load_scored_run`), never re-parsed here.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.predictions import read_predictions
from bench.stages.generate import PREDICTIONS, read_identity

log = logging.getLogger(__name__)


@dataclass
class Run:
    path: Path
    label: str
    system: str
    identity: dict[str, Any]
    findings: dict[str, str]  # sample id -> generated findings
    predictions_sha256: str
    signatures: dict[str, str] = field(default_factory=dict)  # metric -> signature text (scored runs)

    def summary(self) -> dict[str, Any]:
        """How the manifest names this run: enough to tell whether a later run is the same one."""
        return {"label": self.label, "system": self.system, "path": str(self.path), "identity": self.identity,
                "predictions_sha256": self.predictions_sha256, "n_predictions": len(self.findings),
                "metric_signatures": self.signatures}


def load_run(path: Path) -> Run:
    path = Path(path).resolve()
    ident = read_identity(path)
    pred_path = path / PREDICTIONS
    records = read_predictions(pred_path)
    signatures = {}
    if (path / "aggregate.json").exists():
        from bench.stages.compare import load_scored_run

        agg, _ = load_scored_run(path)
        signatures = {name: m["signature"]["text"] for name, m in agg["metrics"].items()
                      if m.get("status") == "ok" and m.get("signature")}
    return Run(path, ident["label"], ident["system"], ident, {r.id: r.prediction for r in records},
               hashlib.sha256(pred_path.read_bytes()).hexdigest(), signatures)


def load_runs(paths: list[Path]) -> list[Run]:
    if len(paths) < 1:
        raise BenchError("name at least one run directory (--runs)")
    runs = [load_run(p) for p in paths]
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise BenchError(f"two runs share the label {dup[0]!r}; the unblinding key names runs by label, so "
                         "give each run its own (`bench run --label`)")
    data = {(r.identity["dataset"], r.identity["fingerprint"], r.identity["split"], r.identity["unit"]) for r in runs}
    if len(data) > 1:
        raise BenchError("the runs were generated on different data (" + "; ".join(
            f"{r.label}: {r.identity['dataset']} {r.identity['split']} {r.identity['unit']} {r.identity['fingerprint']}"
            for r in runs) + "); a reader study compares systems on the same studies")
    return runs


@dataclass
class MetricColumn:
    metric: str
    column: str
    header: str
    higher_is_better: bool
    signature: str


def per_report_metrics(run_path: Path, sample_ids: list[str]) -> tuple[dict[tuple[str, str], dict[str, float]],
                                                                      list[MetricColumn], dict[str, str]]:
    """Each table column of each metric that ran, per report: {(metric, column): {sample id: value}}.

    A report's value is the metric's own aggregate over that report's row alone (for a corpus
    metric such as BLEU, the corpus formula on one report). Metrics that did not run, or whose
    stored value this code cannot reproduce from the rows, are returned as {metric: reason}."""
    from bench.metrics.registry import get_metric
    from bench.stages.compare import load_scored_run

    agg, rows = load_scored_run(run_path)
    values: dict[tuple[str, str], dict[str, float]] = {}
    columns: list[MetricColumn] = []
    unavailable: dict[str, str] = {}
    for name, m in agg["metrics"].items():
        if m.get("status") != "ok":
            unavailable[name] = m.get("reason", m.get("status", "not scored"))
            continue
        try:
            metric = get_metric(name)
        except BenchError as exc:
            unavailable[name] = f"cannot be loaded here: {exc}"
            continue
        failed = metric.failed_column()
        ok = rows if failed not in rows.columns else rows[~rows[failed].fillna(False).astype(bool)]
        whole = metric.aggregate(ok.reset_index(drop=True))
        cols = [c["key"] for c in m["metadata"]["columns"]]
        stored = {c: m["values"][c]["value"] for c in cols}
        if any(not np.isclose(float(whole[c]), stored[c], rtol=1e-9, atol=1e-12, equal_nan=True) for c in cols):
            unavailable[name] = ("its stored value cannot be reproduced from the run's rows with this metric's "
                                 "defaults (scored with other options or another version); re-score the run")
            continue
        by_id = ok.set_index("id")
        # one aggregate per report gives every column of the metric
        one = {sid: metric.aggregate(by_id.loc[[sid]].reset_index()) if sid in by_id.index else None
               for sid in sample_ids}
        for c in m["metadata"]["columns"]:
            col = c["key"]
            # NaN: the metric could not score this report
            values[(name, col)] = {sid: float(v[col]) if v is not None else float("nan") for sid, v in one.items()}
            columns.append(MetricColumn(name, col, c.get("header", col), bool(m["metadata"].get("higher_is_better", True)),
                                        m.get("signature", {}).get("text", "")))
    return values, columns, unavailable

