"""Beyond the paper: do readers agree with each other, and does each automatic metric agree
with the readers?

Inter-reader agreement, on sentences read by more than one reader:
- action (keep / edit / delete): Cohen's kappa when sentences have two readers, Fleiss' kappa
  when they have more (on the sentences with the most common number of readers); computed from
  sums over sentences (`Kappa`) so that the bootstrap is fast, and pinned to scikit-learn's and
  statsmodels' values in the tests;
- clinical impact: Krippendorff's alpha (the krippendorff package), ordinal, with a kept
  sentence counted as "none" (no clinical impact either way) and missing readings allowed.

Metric validity, per report (one system's report of one study): the readers' verdict
(share of its sentences changed, and significant errors, each averaged over the reader who
read it) against each automatic metric of the runs, as the report's own value of that
metric (`readerstudy.runs.per_report_metrics`). Kendall's tau-b (`tau_b`, pinned to scipy's
in the tests) with the metric
turned so that higher is better: a metric that ranks reports as the readers do has a
negative tau with edits and with significant errors.

Intervals: percentile bootstrap over studies (bench.stats.bootstrap), seeded.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from bench.stats import bootstrap
from readerstudy.runs import per_report_metrics
from readerstudy.schema import ACTIONS, IMPACT_LEVEL

log = logging.getLogger(__name__)


def _interval(fn, rows: pd.DataFrame, n_bootstrap: int, seed: int) -> dict[str, float]:
    value = fn.aggregate(rows) if hasattr(fn, "aggregate") else fn(rows)
    out = {"value": value["value"], "low": float("nan"), "high": float("nan")}
    if n_bootstrap:
        iv = bootstrap(fn, rows, n_resamples=n_bootstrap, seed=seed, clusters=rows["study_id"].tolist())["value"]
        out.update(low=iv.low, high=iv.high)
    return out


class Kappa:
    """Cohen's kappa (two readers) or Fleiss' kappa (more), from sums over sentences: an additive
    aggregator, so the study bootstrap is one matrix product. Pinned to scikit-learn's and
    statsmodels' values in tests/test_reader_study.py."""

    def __init__(self, readers: list[str]):
        self.readers = readers
        self.k = len(ACTIONS)

    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        codes = np.stack([rows[r].map({a: i for i, a in enumerate(ACTIONS)}).to_numpy(dtype=int)
                          for r in self.readers], axis=1)  # sentences x readers
        if len(self.readers) == 2:  # the joint table of the two readers, flattened
            return np.eye(self.k * self.k)[codes[:, 0] * self.k + codes[:, 1]]
        counts = np.stack([(codes == j).sum(1) for j in range(self.k)], axis=1).astype(float)  # n_ij
        m = len(self.readers)
        agreement = (counts * (counts - 1)).sum(1) / (m * (m - 1))  # P_i
        return np.column_stack([counts, agreement, np.ones(len(codes))])

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        t = np.asarray(totals, dtype=float)
        k = self.k
        with np.errstate(invalid="ignore", divide="ignore"):
            if len(self.readers) == 2:
                table = t.reshape(*t.shape[:-1], k, k)
                n = table.sum((-2, -1))
                po = np.trace(table, axis1=-2, axis2=-1) / n
                pe = (table.sum(-1) * table.sum(-2)).sum(-1) / n ** 2
            else:
                n_items = t[..., k + 1]
                p_j = t[..., :k] / (n_items[..., None] * len(self.readers))
                po = t[..., k] / n_items
                pe = (p_j ** 2).sum(-1)
            value = (po - pe) / (1 - pe)  # undefined (NaN) when chance agreement is total
        return {"value": value}

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        return {k: float(v) for k, v in self.aggregate_totals(self.sufficient_statistics(rows).sum(0)).items()}


def inter_reader(verdicts: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    v = verdicts[~verdicts["empty"].astype(bool)].copy()
    v["key"] = v["sample_id"] + "|" + v["letter"] + "|" + v["sentence"].astype(str)
    n_readers = v.groupby("key")["reader"].nunique()
    multi = n_readers[n_readers >= 2]
    if multi.empty:
        return {"status": "unavailable", "reason": "no sentence was read by more than one reader "
                                                   "(export with --readers 2 or more and --reads-per-study >= 2)"}
    out: dict[str, Any] = {"status": "ok", "sentences": int(len(multi))}
    # action: kappa on the sentences with the most common number of readers; each sentence's
    # readers are taken in name order (when studies are dealt out, readers differ per sentence)
    m = int(multi.mode().iloc[0])
    keep = v[v["key"].isin(multi[multi == m].index)].sort_values(["key", "reader"])
    grouped = keep.groupby("key", sort=True)
    readers = [f"r{i}" for i in range(m)]
    ordered = pd.DataFrame(grouped["action"].agg(list).tolist(), columns=readers)
    ordered["study_id"] = grouped["study_id"].first().to_numpy()
    out["action"] = {"statistic": "Cohen's kappa" if m == 2 else "Fleiss' kappa", "readers_per_sentence": m,
                     "sentences": int(len(ordered)),
                     **_interval(Kappa(readers), ordered, n_bootstrap, seed)}
    # impact: Krippendorff's alpha, ordinal, missing allowed
    v["level"] = np.where(v["action"] == "keep", 0, v["impact"].map(IMPACT_LEVEL)).astype(float)
    lv = v[v["key"].isin(multi.index)].pivot_table(index=["key", "study_id"], columns="reader", values="level",
                                                    aggfunc="first")
    lvl = lv.reset_index()
    reader_cols = list(lv.columns)

    def alpha(rows: pd.DataFrame) -> dict[str, float]:
        import krippendorff

        data = rows[reader_cols].to_numpy(dtype=float).T  # readers x sentences
        if len(np.unique(data[~np.isnan(data)])) < 2:
            return {"value": float("nan")}
        return {"value": float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal",
                                                  value_domain=[0, 1, 2]))}

    out["impact"] = {"statistic": "Krippendorff's alpha (ordinal; kept = none)", "sentences": int(len(lvl)),
                     **_interval(alpha, lvl, n_bootstrap, seed)}
    return out


def report_verdicts(reads: pd.DataFrame) -> pd.DataFrame:
    """Per report (sample, run): mean over its readers of the share of sentences changed and of
    the significant errors."""
    r = reads.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        r["edit_rate"] = np.where(r["sentences"] > 0, r["changed"] / r["sentences"].where(r["sentences"] > 0), np.nan)
    r["significant"] = r["impact_significant"].astype(float)
    return r.groupby(["sample_id", "study_id", "run"], sort=True)[["edit_rate", "significant"]].mean().reset_index()


def metric_validity(reads: pd.DataFrame, run_paths: dict[str, Any], n_bootstrap: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """Kendall's tau-b between each metric and the readers' verdicts, per report."""
    if reads.empty:
        return {"metrics": [], "unavailable": {"(all metrics)": "no complete report reading to compare with"}}
    reports = report_verdicts(reads)
    samples = sorted(reports["sample_id"].unique())
    per_run: dict[str, tuple] = {}
    unavailable: dict[str, str] = {}
    for run, path in run_paths.items():
        if not (path / "aggregate.json").exists():
            unavailable["(all metrics)"] = f"run {run} is not scored; run `bench score --run {path}`"
            return {"metrics": [], "unavailable": unavailable}
        per_run[run] = per_report_metrics(path, samples)
    columns: dict[tuple[str, str], Any] = {}
    for run, (values, cols, unav) in per_run.items():
        for name, reason in unav.items():
            unavailable.setdefault(name, f"{reason} (run {run})")
        for c in cols:
            columns.setdefault((c.metric, c.column), []).append((run, c))
    table = reports.copy()
    kept: list[tuple[str, str, Any]] = []
    for (metric, column), entries in sorted(columns.items()):
        if metric in unavailable:
            continue
        if len(entries) != len(run_paths):
            unavailable[metric] = "not scored in every run"
            continue
        sigs = {c.signature for _, c in entries}
        if len(sigs) > 1:
            unavailable[metric] = f"computed differently across the runs ({' vs '.join(sorted(sigs))})"
            continue
        c0 = entries[0][1]
        sign = 1.0 if c0.higher_is_better else -1.0
        per = {(s, run): sign * per_run[run][0][(metric, column)][s] for run, _ in entries for s in samples}
        table[f"{metric}:{column}"] = [per.get((s, r), np.nan) for s, r in zip(table["sample_id"], table["run"])]
        kept.append((metric, column, c0))
    if not kept:
        return {"metrics": [], "unavailable": unavailable}
    # One bootstrap for every metric and verdict: the same resampled studies for all of them.
    taus = Taus([f"{m}:{c}" for m, c, _ in kept])
    point = taus(table)
    dist = bootstrap(taus, table, n_resamples=n_bootstrap, seed=seed,
                     clusters=table["study_id"].tolist()) if n_bootstrap else {}
    rows_out = []
    for metric, column, c0 in kept:
        entry = {"metric": metric, "column": column, "header": c0.header, "signature": c0.signature,
                 "higher_is_better": c0.higher_is_better}
        for verdict in VERDICTS:
            k = f"{metric}:{column}|{verdict}"
            both = table[[f"{metric}:{column}", verdict]].notna().all(axis=1)
            iv = dist.get(k)
            entry[verdict] = {"reports": int(both.sum()), "value": point[k],
                              "low": iv.low if iv else float("nan"), "high": iv.high if iv else float("nan")}
        rows_out.append(entry)
    return {"metrics": rows_out, "unavailable": unavailable}


VERDICTS = ("edit_rate", "significant")


class Taus:
    """rows -> tau-b of every metric column with every verdict, on the reports where both are known."""

    def __init__(self, columns: list[str]):
        self.columns = columns

    def __call__(self, rows: pd.DataFrame) -> dict[str, float]:
        out = {}
        verdicts = {v: rows[v].to_numpy(dtype=float) for v in VERDICTS}
        for c in self.columns:
            x = rows[c].to_numpy(dtype=float)
            for v, y in verdicts.items():
                ok = ~(np.isnan(x) | np.isnan(y))
                out[f"{c}|{v}"] = tau_b(x[ok], y[ok])
        return out


def tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b over all pairs, (concordant - discordant) / sqrt(pairs untied in x * pairs
    untied in y), as scipy.stats.kendalltau(variant="b") (pinned in the tests); vectorised over
    pairs because the bootstrap calls it a thousand times per metric. NaN when a side is constant."""
    if len(x) < 2:
        return float("nan")
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    denom = np.sqrt(np.abs(dx).sum() * np.abs(dy).sum())
    return float((dx * dy).sum() / denom) if denom else float("nan")
