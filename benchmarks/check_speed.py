"""Benchmark: `bench check` at the paper's scale, on stored per-sample statistics.

3,403 samples (the MIMIC-CXR test images; here about 2,500 studies, a third of them with two
images) scored by ten metrics with 16 leaderboard columns, and a run that is worse on every
column, so that every column goes through the one-sided paired test with 10,000 permutations
(studies swapped together). Texts are phantom reports. BLEU, ROUGE-L, METEOR and the rules
labeller run for real; CheXbert, RGER and RadFact rows are made without their models (a label
matrix, per-report F1s, and sentence-match entailment counts) in exactly their metrics' row
formats, since the check only re-aggregates stored rows and never re-runs a metric; three
per-sample mean metrics (word overlaps) stand in for the field's embedding scores (BERTScore,
SembScore, RaTEScore are means of per-report scores too).

Printed side by side from one run: the check's wall time, and the same paired tests through
the generic path (re-aggregating resampled DataFrames, timed on fewer permutations and
scaled linearly), whose ratio is what computing on sufficient statistics buys.

    python benchmarks/check_speed.py [--n 3403] [--permutations 10000] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.data.records import Dataset, Sample
from bench.metrics.base import Metric
from bench.metrics.chexbert import CheXbertMetric
from bench.metrics.chexpert_rules import ChexpertRulesMetric, label_reports
from bench.metrics.radgraph import RgerMetric
from bench.metrics.registry import get_metric
from bench.predictions import PredictionRecord
from bench.stages import check as gate
from bench.stages.score import join_references, score, write_scores
from radfact.metric import RadFactMetric
from radfact.scores import StudyScore


def sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in text.split(".") if s.strip()]


class ModelFreeCheXbert(CheXbertMetric):
    """CheXbert's row format, labels from the rules labeller (no weights needed)."""

    def check(self) -> None:
        pass

    def signature_settings(self) -> dict:
        return {"model": "benchmark-rows"}

    def label(self, reports):
        return label_reports(reports)


class ModelFreeRger(RgerMetric):
    """RGER's row format, per-report sentence-set F1 in place of RadGraph's entity F1."""

    def check(self) -> None:
        pass

    def signature_settings(self) -> dict:
        return {"model": "benchmark-rows"}

    def per_sample(self, references, predictions):
        f1 = []
        for r, p in zip(references, predictions):
            a, b = set(sentences(r)), set(sentences(p))
            f1.append(2 * len(a & b) / (len(a) + len(b)) if a and b else 0.0)
        return pd.DataFrame({"rger_simple": f1, "rger_partial": f1, "rger_complete": f1})


class ModelFreeRadFact(RadFactMetric):
    """RadFact's row format, entailment as exact sentence match (no judge needed)."""

    def check(self) -> None:
        pass

    def signature_settings(self) -> dict:
        return {"judge": "benchmark-rows"}

    def per_sample(self, references, predictions):
        rows = []
        for r, p in zip(references, predictions):
            a, b = sentences(r), sentences(p)
            rows.append(StudyScore(sum(s in a for s in b), len(b), sum(s in b for s in a), len(a),
                                   judgements=len(a) + len(b) + 2).row())
        return pd.DataFrame(rows)


class WordOverlap(Metric):
    """A per-sample mean metric (one of three stand-ins for the field's embedding scores)."""

    level = "sample"

    def __init__(self, kind: str = "dice"):
        self.kind = kind

    def per_sample(self, references, predictions):
        out = []
        for r, p in zip(references, predictions):
            a, b = set(r.lower().split()), set(p.lower().split())
            inter = len(a & b)
            if self.kind == "dice":
                out.append(2 * inter / (len(a) + len(b)) if a or b else 0.0)
            elif self.kind == "jaccard":
                out.append(inter / len(a | b) if a | b else 0.0)
            else:
                out.append(inter / len(a) if a else 0.0)
        return pd.DataFrame({self.name: out})

    def sufficient_statistics(self, rows):
        return np.column_stack([rows[self.name].to_numpy(float), np.ones(len(rows))])

    def aggregate_totals(self, totals):
        return {self.name: np.asarray(totals)[..., 0] / np.asarray(totals)[..., 1]}

    def aggregate(self, rows):
        return {self.name: float(rows[self.name].mean())}


def _overlap(kind: str) -> type[WordOverlap]:
    return type(f"Overlap_{kind}", (WordOverlap,), {"name": f"overlap-{kind}", "columns": (f"overlap-{kind}",),
                                                     "__init__": lambda self: WordOverlap.__init__(self, kind)})


OVERLAPS = {f"overlap-{k}": _overlap(k) for k in ("dice", "jaccard", "recall")}


def make_data(n: int, seed: int = 0) -> tuple[Dataset, dict[str, str], dict[str, str]]:
    from bench.stages.data import DataConfig, open_context

    _, ds = open_context(DataConfig(split="train"))
    pool = [s.findings for s in ds.samples if s.findings.strip()]
    rng = random.Random(seed)
    samples, study = [], 0
    while len(samples) < n:
        images = 2 if rng.random() < 1 / 3 else 1
        ref = rng.choice(pool)
        for k in range(images):
            if len(samples) < n:
                samples.append(Sample(f"d{len(samples)}", f"d{len(samples)}", f"s{study}", f"p{study}", "test", "PA",
                                      Path("/none"), ref))
        study += 1
    data = Dataset("benchmark", Path("/none"), "test", "image", samples, fingerprint="benchmark")
    base = {s.id: rng.choice(pool) for s in samples}
    # Worse everywhere: a third of the reports lose their last sentence, a tenth become empty.
    worse = {}
    for i, t in base.items():
        u = rng.random()
        worse[i] = "" if u < 0.1 else (" ".join(s + "." for s in t.split(".")[:-2]) if u < 0.43 else t)
    return data, base, worse


def metrics() -> list[Metric]:
    return [get_metric("bleu"), get_metric("rouge"), get_metric("meteor"), ChexpertRulesMetric(),
            ModelFreeCheXbert(), ModelFreeRger(), ModelFreeRadFact(), *(cls() for cls in OVERLAPS.values())]


def scored(data: Dataset, texts: dict[str, str], out: Path) -> Path:
    inp = join_references([PredictionRecord(i, t) for i, t in texts.items()], data)
    result = score(inp.ids, inp.references, inp.predictions, metrics(), n_bootstrap=0, study_ids=inp.study_ids)
    write_scores(out, out.name, "benchmark", inp, result)
    return out


def generic_seconds(run: Path, baseline: Path, permutations: int) -> float:
    """The same one-sided tests re-aggregating resampled rows with each metric's `aggregate`."""
    from bench.stats.paired import paired_randomization_test

    _, base_rows = gate.read_baseline(baseline)
    _, rows = gate.load_scored_run(run)
    studies = dict(zip(base_rows["id"], base_rows["study_id"]))
    t0 = time.perf_counter()
    for m in metrics():
        paired_randomization_test(lambda r, m=m: m.aggregate(r), rows, base_rows, n_permutations=permutations,
                                  seed=0, clusters=studies, alternative="less")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3403)
    ap.add_argument("--permutations", type=int, default=10000)
    ap.add_argument("--generic-permutations", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import bench.stages.check as check_module
    import bench.metrics.registry as registry

    # The check looks metrics up by name; point the three model-free ones at their row makers.
    real_get = registry.get_metric
    stand_ins = {"chexbert": ModelFreeCheXbert, "rger": ModelFreeRger, "radfact": ModelFreeRadFact, **OVERLAPS}
    registry.get_metric = lambda name, *a, **k: stand_ins[name]() if name in stand_ins else real_get(name, *a, **k)
    data, base, worse = make_data(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        b = scored(data, base, Path(tmp) / "baseline-run")
        r = scored(data, worse, Path(tmp) / "worse-run")
        scoring_s = time.perf_counter() - t0
        gate.write_baseline(b, Path(tmp) / "baseline.json")
        times, report = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            report = check_module.check_run(r, Path(tmp) / "baseline.json", n_permutations=args.permutations)
            times.append(time.perf_counter() - t0)
        generic = generic_seconds(r, Path(tmp) / "baseline.json", args.generic_permutations)
    assert report is not None
    tested = sum(v.p_value is not None for v in report.verdicts)
    generic_scaled = generic * args.permutations / args.generic_permutations
    out = {"samples": args.n, "studies": len({s.study_id for s in data.samples}), "metrics": len(metrics()),
           "columns": len(report.verdicts), "columns_tested": tested, "permutations": args.permutations,
           "check_median_s": statistics.median(times), "check_runs_s": times,
           "generic_path_s_scaled": generic_scaled, "ratio_generic_over_check": generic_scaled / statistics.median(times),
           "failed_columns": sum(v.failed for v in report.verdicts), "scoring_both_runs_s": scoring_s}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"bench check: {out['samples']} samples ({out['studies']} studies), {out['metrics']} metrics, "
          f"{out['columns']} columns ({tested} through the paired test), {args.permutations} permutations")
    print(f"  ours (sufficient statistics): median {out['check_median_s']:.2f} s over {args.repeats} runs "
          f"({', '.join(f'{t:.2f}' for t in times)})")
    print(f"  generic path (re-aggregating rows): {generic_scaled:.0f} s (timed at {args.generic_permutations} "
          f"permutations, scaled) = {out['ratio_generic_over_check']:.0f}x ours")
    print(f"  verdicts: {out['failed_columns']} of {out['columns']} columns fail (the run is worse everywhere)")


if __name__ == "__main__":
    main()
