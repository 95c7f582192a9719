"""`bench reader-study import`, second half: statistics, agreement, metric validity, plots, files.

results/ gets verdicts.csv (every answer, unblinded), summary.json (every number below, with
the export's manifest and the runs' signatures), summary.md (tables) and the two plots.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.manifest import write_json
from readerstudy.agreement import inter_reader, metric_validity
from readerstudy.collect import collect
from readerstudy.layout import StudyDir
from readerstudy.plots import action_plot, category_impact_plot
from readerstudy.schema import CATEGORIES, IMPACTS
from readerstudy.statistics import readings, summarise


def import_study(root: Path, partial: bool = False, n_bootstrap: int = 1000, n_permutations: int = 10000,
                 seed: int = 0) -> dict[str, Any]:
    study = StudyDir(Path(root)).check()
    manifest = json.loads(study.manifest.read_text())
    got = collect(study, partial=partial)
    runs = [r["label"] for r in manifest["runs"]]
    summary = summarise(got.verdicts, runs, n_bootstrap, n_permutations, seed)
    summary["agreement"] = inter_reader(got.verdicts, n_bootstrap, seed)
    paths = {r["label"]: Path(r["path"]) for r in manifest["runs"]}
    missing = [f"{k} ({p})" for k, p in paths.items() if not p.is_dir()]
    if missing:
        summary["metric_validity"] = {"metrics": [], "unavailable": {
            "(all metrics)": f"run directories not found: {', '.join(missing)}"}}
    else:
        summary["metric_validity"] = metric_validity(readings(got.verdicts), paths, n_bootstrap, seed)
    summary["sources"] = got.sources
    summary["simulated"] = any(src.endswith("(simulated)") for src in got.sources.values())
    summary["left_out"] = got.left_out
    summary["export"] = {"id": manifest["export"], "settings": manifest["settings"], "dataset": manifest["dataset"],
                         "runs": [{k: r[k] for k in ("label", "system", "path", "predictions_sha256",
                                                     "metric_signatures")} for r in manifest["runs"]]}
    summary["settings"] = {"bootstrap": {"unit": "study", "n": n_bootstrap, "seed": seed, "ci": 0.95},
                           "paired_test": {"unit": "study", "n_permutations": n_permutations, "seed": seed},
                           "partial": partial}
    study.results.mkdir(exist_ok=True)
    got.verdicts.to_csv(study.results / "verdicts.csv", index=False)
    write_json(study.results / "summary.json", _finite(summary))
    (study.results / "summary.md").write_text(markdown(summary))
    category_impact_plot(summary, study.results / "category-impact.png")
    action_plot(summary, study.results / "actions.png")
    (study.results / "problems.txt").unlink(missing_ok=True)
    return summary


def _finite(obj: Any) -> Any:
    """NaN as null in JSON (what JSON readers other than Python's understand)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x: float, d: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def _ci(iv: dict[str, float], pct: bool = False) -> str:
    f = _pct if pct else _num
    return f"{f(iv['value'])} [{f(iv['low'])}, {f(iv['high'])}]"


def markdown(s: dict[str, Any]) -> str:
    lines = [f"# Reader study {s['export']['id']}", ""]
    if s.get("simulated"):
        lines += ["**Simulated readers (readerstudy.simulate): a dry run of the pipeline, not a result.**", ""]
    lines += [
             f"Readers: {', '.join(f'{r} ({src})' for r, src in s['sources'].items())}. "
             f"Intervals: 95% percentile bootstrap over studies ({s['settings']['bootstrap']['n']} resamples, "
             f"seed {s['settings']['bootstrap']['seed']}).", ""]
    if s["left_out"]:
        lines += ["Left out: " + "; ".join(s["left_out"]), ""]
    lines += ["| system | readings | sentences/report | kept | edited | deleted | changed | changes/report | "
              "impact sig / minor / none | categories per changed sentence | significant errors/report | "
              "reports with a significant error |", "|---" * 12 + "|"]
    for name, x in [*s["systems"].items(), ("all", s["all"])]:
        c, r = x["counts"], x["rates"]
        imp = x["impact"]["counts"]
        cps = x["categories"]["per_changed_sentence"]
        iv = x["intervals"]
        shares = x["impact"]["shares"]
        impacts = " / ".join(f"{imp[i]} ({_pct(shares[i])})" for i in IMPACTS)
        lines.append(f"| {name} | {x['readings']} | {_num(x['sentences_per_report'], 1)} | {c['keep']} ({_pct(r['keep'])}) "
                     f"| {c['edit']} ({_pct(r['edit'])}) | {c['delete']} ({_pct(r['delete'])}) | {c['changed']} "
                     f"({_pct(r['changed'])}) | {_num(x['changes_per_report'], 1)} | "
                     f"{impacts} | "
                     f"{_num(cps['mean'])} ± {_num(cps['sd'])} | "
                     f"{_ci(iv['significant_per_report']) if iv else 'n/a'} | "
                     f"{_ci(iv['reports_with_significant'], True) if iv else 'n/a'} |")
    lines += ["", "Error categories (count, share of all marks):", "",
              "| system | " + " | ".join(CATEGORIES) + " |", "|---" * (len(CATEGORIES) + 1) + "|"]
    for name, x in [*s["systems"].items(), ("all", s["all"])]:
        cc = x["categories"]
        lines.append(f"| {name} | " + " | ".join(f"{cc['counts'][c]} ({_pct(cc['shares_of_marks'][c])})"
                                                  for c in CATEGORIES) + " |")
    if s["paired"]:
        lines += ["", "Paired comparisons (same readings; approximate randomisation, studies swapped together):", "",
                  "| A | B | statistic | A | B | A - B | p |", "|---|---|---|---|---|---|---|"]
        for p in s["paired"]:
            lines.append(f"| {p['a']} | {p['b']} | {p['statistic']} | {_num(p['value_a'], 3)} | {_num(p['value_b'], 3)} "
                         f"| {_num(p['difference'], 3)} | {_num(p['p_value'], 4)} |")
    ag = s["agreement"]
    lines += ["", "Agreement between readers:", ""]
    if ag["status"] != "ok":
        lines.append(f"- n/a: {ag['reason']}")
    else:
        for k in ("action", "impact"):
            lines.append(f"- {k}: {ag[k]['statistic']} {_ci(ag[k])} on {ag[k]['sentences']} sentences")
    mv = s["metric_validity"]
    lines += ["", "Metric validity: Kendall's tau-b per report between each metric (higher is better) and the "
                  "readers' verdicts; negative means the metric ranks reports as the readers do:", "",
              "| metric | column | tau with edit rate | tau with significant errors | reports |", "|---|---|---|---|---|"]
    for m in mv["metrics"]:
        lines.append(f"| {m['metric']} | {m['header']} | {_ci(m['edit_rate'])} | {_ci(m['significant'])} | "
                     f"{m['edit_rate']['reports']} |")
    for name, reason in mv["unavailable"].items():
        lines.append(f"| {name} | n/a | {reason} | | |")
    lines += ["", "Runs:", ""] + [f"- {r['label']} ({r['system']}): {r['path']}; predictions sha256 "
                                  f"{r['predictions_sha256'][:16]}" for r in s["export"]["runs"]]
    return "\n".join(lines) + "\n"
