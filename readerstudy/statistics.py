"""The paper's reader-study statistics (Appendix E.1), per system, from unblinded verdicts.

Unit: a reading, one reader's verdicts on one report. With several readers a report is read
several times and every reading counts (the study is the unit of resampling, so the readings
of one study, whatever the reader or the system, are drawn together). Definitions, as the
paper uses them:

- sentences per report: sentences / readings (an empty report has none);
- kept, edited, deleted: counts and shares of sentences; "changed" is edited + deleted (the
  paper's "edits": 132 of 165 sentences "edited or deleted");
- impact: shares of the changed sentences that are significant, minor or none;
- error categories: counts, their share of all category marks, and categories per changed
  sentence (mean and sample standard deviation, ddof 1, as "1.46 +- 0.67");
- significant errors per report (changed sentences with significant impact / readings) and
  the share of readings with at least one, with percentile bootstrap intervals over studies
  (bench.stats.bootstrap);
- a paired comparison of every two systems on the same readings: the difference and a paired
  approximate randomisation test with studies swapped together (bench.stats.paired).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from bench.stats import bootstrap, paired_randomization_test
from readerstudy.schema import CATEGORIES, IMPACTS


def readings(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per reading: id ("reader|sample"), study, run, and the counts a reading has."""
    v = verdicts.copy()
    real = ~v["empty"].astype(bool)
    v["is_sentence"] = real.astype(int)
    for a in ("keep", "edit", "delete"):
        v[a] = (real & (v["action"] == a)).astype(int)
    v["changed"] = v["edit"] + v["delete"]
    for i in IMPACTS:
        v[f"impact_{i}"] = ((v["changed"] == 1) & (v["impact"] == i)).astype(int)
    v["n_categories"] = v["categories"].map(lambda s: len([c for c in s.split(";") if c]) if s else 0)
    g = v.groupby(["reader", "sample_id", "study_id", "run"], sort=True)
    out = g[["is_sentence", "keep", "edit", "delete", "changed", *[f"impact_{i}" for i in IMPACTS],
             "n_categories"]].sum().reset_index()
    out = out.rename(columns={"is_sentence": "sentences"})
    out["id"] = out["reader"] + "|" + out["sample_id"]
    return out


class ReadingRates:
    """Rates over readings as ratios of summed counts: an additive aggregator (fast bootstrap)."""

    stats = ("sentences", "changed", "impact_significant", "reports", "with_significant")

    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        return np.column_stack([rows["sentences"], rows["changed"], rows["impact_significant"],
                                np.ones(len(rows)), (rows["impact_significant"] > 0).astype(float)]).astype(float)

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        t = np.asarray(totals, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"significant_per_report": t[..., 2] / t[..., 3],
                    "reports_with_significant": t[..., 4] / t[..., 3],
                    "changed_rate": t[..., 1] / t[..., 0]}

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        return {k: float(v) for k, v in self.aggregate_totals(self.sufficient_statistics(rows).sum(0)).items()}


def _share(n: float, d: float) -> float:
    return float(n / d) if d else float("nan")


def system_summary(verdicts: pd.DataFrame, reads: pd.DataFrame, n_bootstrap: int, seed: int) -> dict[str, Any]:
    sentences = verdicts[~verdicts["empty"].astype(bool)]
    n_reports, n_sent = len(reads), int(reads["sentences"].sum())
    counts = {a: int(reads[a].sum()) for a in ("keep", "edit", "delete", "changed")}
    changed = sentences[sentences["action"].isin(["edit", "delete"])]
    impact = {i: int((changed["impact"] == i).sum()) for i in IMPACTS}
    marked = [(set(c for c in cats.split(";") if c), imp) for cats, imp in zip(changed["categories"], changed["impact"])]
    cats_per = pd.Series([len(m) for m, _ in marked], dtype=float)
    cat_counts = {c: sum(c in m for m, _ in marked) for c in CATEGORIES}
    n_marks = sum(cat_counts.values())
    by_impact = {c: {i: sum(c in m and imp == i for m, imp in marked) for i in IMPACTS} for c in CATEGORIES}
    out: dict[str, Any] = {
        "readings": n_reports, "studies": int(reads["study_id"].nunique()), "sentences": n_sent,
        "sentences_per_report": _share(n_sent, n_reports),
        "empty_reports": int((reads["sentences"] == 0).sum()),
        "counts": counts, "rates": {a: _share(n, n_sent) for a, n in counts.items()},
        "changes_per_report": _share(counts["changed"], n_reports),
        "impact": {"counts": impact, "shares": {i: _share(n, len(changed)) for i, n in impact.items()}},
        "categories": {"counts": cat_counts, "shares_of_marks": {c: _share(n, n_marks) for c, n in cat_counts.items()},
                       "marks": n_marks,
                       "per_changed_sentence": {"mean": float(cats_per.mean()) if len(cats_per) else float("nan"),
                                                "sd": float(cats_per.std(ddof=1)) if len(cats_per) > 1 else float("nan")}},
        "category_by_impact": by_impact,
    }
    if n_bootstrap and n_reports:
        iv = bootstrap(ReadingRates(), reads, n_resamples=n_bootstrap, seed=seed, clusters=reads["study_id"].tolist())
        out["intervals"] = {k: {"value": v.value, "low": v.low, "high": v.high} for k, v in iv.items()}
    else:
        out["intervals"] = {k: {"value": v, "low": float("nan"), "high": float("nan")}
                            for k, v in ReadingRates().aggregate(reads).items()} if n_reports else {}
    return out


def paired(reads: pd.DataFrame, runs: list[str], n_permutations: int, seed: int) -> list[dict[str, Any]]:
    """A - B for every two systems, on the readings both have (same reader, same study)."""
    out = []
    rates = ReadingRates()
    for a, b in combinations(runs, 2):
        ra, rb = reads[reads["run"] == a], reads[reads["run"] == b]
        common = sorted(set(ra["id"]) & set(rb["id"]))
        if not common:
            continue
        ra, rb = ra[ra["id"].isin(common)], rb[rb["id"].isin(common)]
        va, vb = rates.aggregate(ra), rates.aggregate(rb)
        p = paired_randomization_test(rates, ra, rb, n_permutations=n_permutations, seed=seed,
                                      clusters=dict(zip(ra["id"], ra["study_id"])))
        for k in va:
            out.append({"a": a, "b": b, "statistic": k, "value_a": va[k], "value_b": vb[k],
                        "difference": va[k] - vb[k], "p_value": p[k], "readings": len(common),
                        "studies": int(ra["study_id"].nunique())})
    return out


def summarise(verdicts: pd.DataFrame, runs: list[str], n_bootstrap: int = 1000, n_permutations: int = 10000,
              seed: int = 0) -> dict[str, Any]:
    reads = readings(verdicts)
    systems = {r: system_summary(verdicts[verdicts["run"] == r], reads[reads["run"] == r], n_bootstrap, seed)
               for r in runs}
    return {"systems": systems, "all": system_summary(verdicts, reads, n_bootstrap, seed),
            "paired": paired(reads, runs, n_permutations, seed)}
