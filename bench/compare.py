"""`bench compare RUN_A RUN_B`: is the difference between two runs more than chance?

For every metric that ran in both, a paired approximate randomisation test on the
per-sample rows (bench.stats.paired), aggregated exactly as the leaderboard aggregates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.metrics.registry import get_metric
from bench.stats.paired import paired_randomization_test


@dataclass
class Comparison:
    metric: str
    column: str
    a: float
    b: float
    p_value: float


def _load(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    agg_path, rows_path = run_dir / "aggregate.json", run_dir / "scores.parquet"
    for p in (agg_path, rows_path):
        if not p.exists():
            raise BenchError(f"{run_dir} is not a finished run directory ({p.name} missing)")
    return json.loads(agg_path.read_text()), pd.read_parquet(rows_path)


def compare_runs(run_a: Path, run_b: Path, n_permutations: int = 10000, seed: int = 0) -> tuple[list[Comparison], list[str]]:
    """Comparisons for metrics both runs have, and notes on those that could not be compared."""
    agg_a, rows_a = _load(Path(run_a))
    agg_b, rows_b = _load(Path(run_b))
    results, notes = [], []
    for name in agg_a["metrics"]:
        ma, mb = agg_a["metrics"][name], agg_b["metrics"].get(name)
        if mb is None or ma["status"] != "ok" or mb["status"] != "ok":
            notes.append(f"{name}: not available in both runs")
            continue
        metric = get_metric(name)
        pvals = paired_randomization_test(metric, rows_a, rows_b, n_permutations=n_permutations, seed=seed)
        for col, p in pvals.items():
            results.append(Comparison(name, col, ma["values"][col]["value"], mb["values"][col]["value"], p))
    return results, notes
