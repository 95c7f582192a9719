"""`bench check`: a regression gate on metrics for CI.

A baseline file holds what a run scored: every metric's values, signature, metadata and
per-sample rows (compressed), the dataset it was scored on and the harness's git revision.
`check_run` compares a new run with it, column by column (a metric's table columns):

- the run's value is identical to the baseline's: passes ("identical"; deterministic systems);
- it moved in the good direction (the metric's metadata says which): passes ("better");
- it moved in the bad direction by no more than the column's tolerance: passes ("within tolerance");
- it moved further: a ONE-SIDED paired randomisation test on the per-sample rows of the run and
  the baseline (studies swapped together, the metric's own aggregation) decides: the drop fails
  the check ("worse") only when p < level (default 0.01); otherwise it passes as "noise";
- a metric available in the baseline and unavailable now fails ("unavailable");
- values computed differently (the signatures differ, bootstrap settings aside) fail ("signature");
- a metric the baseline lacks is reported ("new") and never fails.

Tolerances default to 0 (significance alone decides, which suits deterministic systems);
`calibrate` sets them from repeated runs of one stochastic system with different seeds:
`TOLERANCE_SDS` standard deviations of their values.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.errors import BenchError, DataError
from bench.manifest import git_revision, write_json
from bench.stages.compare import load_scored_run, paired_rows, value_differences

FORMAT = 1
TOLERANCE_SDS = 2.8  # run-to-run spread multiplier for calibrated tolerances
IDENTICAL = 1e-12


@dataclass
class Verdict:
    metric: str
    column: str
    header: str
    value: float | None
    baseline: float | None
    delta: float | None
    low: float | None
    high: float | None
    p_value: float | None
    tolerance: float
    verdict: str  # identical | better | within tolerance | noise | worse | unavailable | signature | new
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict in ("worse", "unavailable", "signature")


@dataclass
class CheckReport:
    run: str
    baseline: str
    level: float
    verdicts: list[Verdict]
    seconds: float

    @property
    def failed(self) -> bool:
        return any(v.failed for v in self.verdicts)


# -- baseline files ----------------------------------------------------------------------

def write_baseline(run_dir: Path, path: Path) -> dict[str, Any]:
    """A baseline file from a scored run (tolerances start at 0; see `calibrate`)."""
    agg, rows = load_scored_run(Path(run_dir))
    buf = io.BytesIO()
    rows.to_parquet(buf, index=False)
    doc = {"format": FORMAT, "run": agg["run"], "system": agg.get("system"), "dataset": agg["dataset"],
           "n": agg["n"], "bootstrap": agg.get("bootstrap"), "git": git_revision(),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "metrics": {name: {k: m.get(k) for k in ("status", "values", "metadata", "signature", "reason")}
                       for name, m in agg["metrics"].items()},
           "tolerances": {},
           "rows": base64.b64encode(gzip.compress(buf.getvalue(), mtime=0)).decode("ascii")}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
    return doc


def read_baseline(path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"baseline file {path} does not exist; write one with `bench check --update --run RUN "
                        f"--baseline {path}`")
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT}")
        rows = pd.read_parquet(io.BytesIO(gzip.decompress(base64.b64decode(doc["rows"]))))
        for key in ("dataset", "metrics", "n"):
            doc[key]  # noqa: B018  (presence check)
    except Exception as exc:  # any damage: truncated JSON, bad base64, a broken parquet, missing keys
        raise DataError(f"baseline file {path} is damaged or not a baseline ({type(exc).__name__}: {exc}); "
                        "restore it from version control or write it again with --update") from None
    return doc, rows


def calibrate(run_dirs: Sequence[Path], path: Path) -> dict[str, dict[str, float]]:
    """Tolerances from repeated runs of one system (different seeds): TOLERANCE_SDS x the sample
    standard deviation of each column's values; stored in the baseline file."""
    if len(run_dirs) < 2:
        raise BenchError("--calibrate needs at least two runs of the same system (different seeds)")
    doc, _ = read_baseline(path)
    values: dict[tuple[str, str], list[float]] = {}
    for d in run_dirs:
        agg, _ = load_scored_run(Path(d))
        _same_data(doc, agg, Path(d))
        for name, m in agg["metrics"].items():
            if m["status"] != "ok":
                continue
            for col in _table_columns(m):
                if col in m["values"]:
                    values.setdefault((name, col), []).append(m["values"][col]["value"])
    tolerances: dict[str, dict[str, float]] = {}
    for (name, col), vs in values.items():
        if len(vs) >= 2:
            tolerances.setdefault(name, {})[col] = TOLERANCE_SDS * float(np.std(vs, ddof=1))
    doc["tolerances"] = tolerances
    doc["calibrated_from"] = [str(d) for d in run_dirs]
    write_json(Path(path), doc)
    return tolerances


# -- the check ---------------------------------------------------------------------------

def _table_columns(m: dict[str, Any]) -> list[str]:
    return [c["key"] for c in (m.get("metadata") or {}).get("columns", [])]


def _same_data(doc: dict[str, Any], agg: dict[str, Any], where: Path) -> None:
    want, got = doc["dataset"], agg["dataset"]
    diffs = [f"{k}: {want.get(k)!r} in the baseline, {got.get(k)!r} in {where}" for k in ("name", "fingerprint",
             "split", "unit") if want.get(k) != got.get(k)]
    if diffs:
        raise BenchError("the run was scored on other data than the baseline (" + "; ".join(diffs) + "); "
                         "compare runs on the same dataset, split and unit")


def check_run(run_dir: Path, baseline: Path, level: float = 0.01, n_permutations: int = 10000,
              seed: int = 0) -> CheckReport:
    t0 = time.perf_counter()
    if not 0 < level < 1:
        raise BenchError(f"--level must be between 0 and 1, got {level}")
    doc, base_rows = read_baseline(baseline)
    agg, rows = load_scored_run(Path(run_dir))
    _same_data(doc, agg, Path(run_dir))
    verdicts: list[Verdict] = []
    for name, bm in doc["metrics"].items():
        verdicts += _check_metric(name, bm, agg["metrics"].get(name), base_rows, rows,
                                  doc.get("tolerances", {}).get(name, {}), level, n_permutations, seed)
    for name, m in agg["metrics"].items():
        if name not in doc["metrics"]:
            for col in _table_columns(m):
                v = m.get("values", {}).get(col, {})
                verdicts.append(Verdict(name, col, _header(m, col), v.get("value"), None, None, v.get("low"),
                                        v.get("high"), None, 0.0, "new", "not in the baseline"))
    return CheckReport(agg["run"], str(baseline), level, verdicts, time.perf_counter() - t0)


def _header(m: dict[str, Any], col: str) -> str:
    return {c["key"]: c["header"] for c in (m.get("metadata") or {}).get("columns", [])}.get(col, col)


def _check_metric(name: str, bm: dict[str, Any], rm: dict[str, Any] | None, base_rows: pd.DataFrame,
                  rows: pd.DataFrame, tolerances: dict[str, float], level: float, n_permutations: int,
                  seed: int) -> list[Verdict]:
    cols = _table_columns(bm)
    if bm["status"] != "ok":
        return []  # nothing to hold the run to
    if rm is None or rm["status"] != "ok":
        why = "not scored in this run" if rm is None else f"unavailable now: {rm.get('reason')}"
        return [Verdict(name, c, _header(bm, c), None, bm["values"][c]["value"], None, None, None, None,
                        tolerances.get(c, 0.0), "unavailable", why) for c in cols if c in bm["values"]]
    diffs = value_differences(bm, rm)
    if diffs:
        return [Verdict(name, c, _header(bm, c), rm["values"].get(c, {}).get("value"), bm["values"][c]["value"],
                        None, None, None, None, tolerances.get(c, 0.0), "signature",
                        "computed differently: " + "; ".join(diffs)) for c in cols if c in bm["values"]]
    higher = bool((bm.get("metadata") or {}).get("higher_is_better", True))
    out, to_test = [], []
    for c in cols:
        if c not in bm["values"] or c not in rm["values"]:
            continue
        b, r = bm["values"][c]["value"], rm["values"][c]
        delta = r["value"] - b
        worse_by = -delta if higher else delta
        tol = float(tolerances.get(c, 0.0))
        v = Verdict(name, c, _header(bm, c), r["value"], b, delta, r.get("low"), r.get("high"), None, tol, "")
        if _nan_equal(r["value"], b) or abs(delta) <= IDENTICAL * max(1.0, abs(b)):
            v.verdict = "identical"
        elif worse_by < 0:
            v.verdict = "better"
        elif worse_by <= tol:
            v.verdict = "within tolerance"
        else:
            to_test.append(v)
        out.append(v)
    if to_test:
        pvals = _one_sided(name, base_rows, rows, higher, n_permutations, seed)
        for v in to_test:
            v.p_value = pvals.get(v.column, float("nan"))
            v.verdict = "worse" if v.p_value < level else "noise"
            v.detail = f"one-sided paired test, {n_permutations} permutations, studies swapped together"
    return out


def _nan_equal(a: float, b: float) -> bool:
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


def _one_sided(name: str, base_rows: pd.DataFrame, rows: pd.DataFrame, higher: bool, n_permutations: int,
               seed: int) -> dict[str, float]:
    """p-values for "the run is worse than the baseline" on this metric's columns."""
    from bench.metrics.registry import get_metric
    from bench.stats.paired import paired_randomization_test

    metric = get_metric(name)
    base, run, studies = paired_rows(base_rows, rows, metric.failed_column())
    # A = run, B = baseline: worse means A below B for higher-is-better metrics.
    return paired_randomization_test(metric, run, base, n_permutations=n_permutations, seed=seed,
                                     clusters=studies, alternative="less" if higher else "greater")


# -- reports -------------------------------------------------------------------------------

def _pct(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}"


def table_rows(report: CheckReport) -> list[list[str]]:
    rows = []
    for v in report.verdicts:
        interval = f"[{_pct(v.low)}, {_pct(v.high)}]" if v.low is not None and v.high is not None else ""
        p = "" if v.p_value is None else f"{v.p_value:.4f}"
        rows.append([f"{v.metric}/{v.header}", _pct(v.value), _pct(v.baseline), _pct(v.delta, signed=True),
                     interval, p, ("FAIL " if v.failed else "") + v.verdict])
    return rows


HEADERS = ["metric", "value", "baseline", "delta", "interval", "p", "verdict"]


def markdown(report: CheckReport) -> str:
    status = "FAILED" if report.failed else "passed"
    lines = [f"### bench check: {report.run} against {report.baseline}: {status}", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(report)]
    details = [f"- {v.metric}/{v.header}: {v.detail}" for v in report.verdicts if v.failed and v.detail]
    return "\n".join(lines + ([""] + details if details else [])) + "\n"


def write_json_report(report: CheckReport, path: Path) -> None:
    write_json(path, {"run": report.run, "baseline": report.baseline, "level": report.level,
                      "failed": report.failed, "seconds": report.seconds,
                      "verdicts": [{**asdict(v), "failed": v.failed} for v in report.verdicts]})


def write_junit(report: CheckReport, path: Path) -> None:
    """JUnit XML: one test case per metric column, so CI systems list each verdict."""
    from xml.sax.saxutils import escape, quoteattr

    cases = []
    for v in report.verdicts:
        name = quoteattr(f"{v.metric}/{v.header}")
        body = ""
        if v.failed:
            msg = f"{v.verdict}: value {_pct(v.value)} vs baseline {_pct(v.baseline)} {v.detail}".strip()
            body = f"<failure message={quoteattr(msg)}>{escape(msg)}</failure>"
        cases.append(f'  <testcase classname={quoteattr("bench.check." + report.run)} name={name}>{body}</testcase>')
    n_fail = sum(v.failed for v in report.verdicts)
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name={quoteattr("bench check " + report.run)} '
           f'tests="{len(report.verdicts)}" failures="{n_fail}" time="{report.seconds:.3f}">\n'
           + "\n".join(cases) + "\n</testsuite>\n")
    Path(path).write_text(xml)
