"""`bench compare RUN_A RUN_B`: is the difference between two runs more than chance?

For every metric that ran in both, a paired approximate randomisation test on the
per-sample rows (bench.stats.paired), aggregated exactly as the leaderboard aggregates, with
the images of one study swapped together. Samples a metric could not score in either run
are left out of that metric's test. Runs scored on different data are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.metrics.registry import get_metric
from bench.signatures import differences
from bench.stages.leaderboard import group_key
from bench.stats.paired import paired_randomization_test


@dataclass
class Comparison:
    metric: str
    column: str
    a: float
    b: float
    p_value: float
    n: int  # samples in the test
    higher_is_better: bool = True
    mixed: bool = False  # the two values were computed differently (allowed by allow_mixed)


def load_scored_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    agg_path, rows_path = Path(run_dir) / "aggregate.json", Path(run_dir) / "scores.parquet"
    for p in (agg_path, rows_path):
        if not p.exists():
            raise BenchError(f"{run_dir} is not a scored run directory ({p.name} missing); "
                             f"run `bench score --run {run_dir}` first")
    return json.loads(agg_path.read_text()), pd.read_parquet(rows_path)


def compare_runs(run_a: Path, run_b: Path, n_permutations: int = 10000, seed: int = 0,
                 allow_mixed: bool = False) -> tuple[list[Comparison], list[str]]:
    """Comparisons for metrics both runs have, and notes on those that could not be compared."""
    agg_a, rows_a = load_scored_run(run_a)
    agg_b, rows_b = load_scored_run(run_b)
    if group_key(agg_a) != group_key(agg_b):
        raise BenchError(f"{run_a} and {run_b} were scored on different data ({agg_a['dataset']} vs "
                         f"{agg_b['dataset']}); a paired test needs the same samples")
    results, notes = [], []
    for name, ma in agg_a["metrics"].items():
        mb = agg_b["metrics"].get(name)
        if mb is None or ma["status"] != "ok" or mb["status"] != "ok":
            notes.append(f"{name}: not available in both runs")
            continue
        diffs = value_differences(ma, mb)
        if diffs and not allow_mixed:
            raise BenchError(f"{name} was computed differently in {run_a} and {run_b} ({'; '.join(diffs)}); "
                             "re-score one of them the same way, or pass --allow-mixed")
        if diffs:
            notes.append(f"{name}: computed differently ({'; '.join(diffs)})")
        metric = get_metric(name)
        a, b, studies = paired_rows(rows_a, rows_b, metric.failed_column())
        dropped = len(rows_a) - len(a)
        if dropped:
            notes.append(f"{name}: {dropped} samples failed in one of the runs and are left out of its test")
        pvals = paired_randomization_test(metric, a, b, n_permutations=n_permutations, seed=seed,
                                          clusters=studies)
        for col, p in pvals.items():
            results.append(Comparison(name, col, ma["values"][col]["value"], mb["values"][col]["value"], p,
                                      len(a), bool(ma.get("metadata", {}).get("higher_is_better", True)),
                                      bool(diffs)))
    return results, notes


def value_differences(ma: dict, mb: dict) -> list[str]:
    """Settings (from the signatures) that make two values of a metric differ in meaning; the
    bootstrap settings change intervals, not values, so they do not count here."""
    sa = {k: v for k, v in (ma.get("signature") or {}).get("settings", {}).items() if k != "boot"}
    sb = {k: v for k, v in (mb.get("signature") or {}).get("settings", {}).items() if k != "boot"}
    return differences(sa, sb)


def paired_rows(rows_a: pd.DataFrame, rows_b: pd.DataFrame,
                failed_column: str) -> tuple[pd.DataFrame, pd.DataFrame, dict | None]:
    """The rows of the samples a metric scored in both runs, and each sample's study (from A)
    so that a paired test swaps studies together."""
    a, b = _scored(rows_a, failed_column), _scored(rows_b, failed_column)
    a, b = a[a["id"].isin(b["id"])], b[b["id"].isin(a["id"])]
    studies = dict(zip(a["id"], a["study_id"])) if "study_id" in a.columns else None
    return a, b, studies


def _scored(rows: pd.DataFrame, failed_column: str) -> pd.DataFrame:
    if failed_column not in rows.columns:
        return rows
    return rows[~rows[failed_column].fillna(False).astype(bool)]
