"""Reader studies end to end: runs -> export -> workbooks filled as a reader fills them -> import,
with every statistic checked against counts worked out here from the runs' predictions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from openpyxl import load_workbook

from bench.errors import BenchError
from bench.predictions import read_predictions
from bench.sentences import split_sentences
from helpers.reader_study import fill_workbook, shared_runs
from readerstudy.export import ExportRequest, export
from readerstudy.items import read_items
from readerstudy.layout import StudyDir
from readerstudy.report import import_study

N, SEED = 4, 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_encoder) -> dict[str, Path]:
    return shared_runs(tmp_path_factory, tiny_encoder)


def rule(run: str, reader: str, k: int) -> dict:
    """The test reader's verdict on sentence k of a report of `run`."""
    if run == "reference" or (run in ("nn", "blanked") and k == 1):
        return {"action": "keep"}
    if run == "constant":
        if k == 1:
            return {"action": "edit", "categories": ["omission", "other"], "impact": "significant", "edit": "Corrected."}
        return {"action": "delete", "categories": ["misclassification"], "impact": "minor"}
    if reader == "reader1":
        return {"action": "edit", "categories": ["overspecific"], "impact": "none", "edit": "Fixed."}
    return {"action": "delete", "categories": ["other"], "impact": "minor"}


def answers_for(study: StudyDir, reader: str) -> dict[str, dict]:
    key = json.loads(study.key.read_text())["studies"]
    return {it.row: rule(key[it.sample_id]["reports"][it.letter], reader, it.sentence)
            for it in read_items(study.items) if it.reader == reader and not it.empty}


def return_all(study: StudyDir) -> None:
    for reader in ("reader1", "reader2"):
        fill_workbook(study.workbooks / f"{reader}.xlsx", study.returned / f"{reader} answers.xlsx",
                      answers_for(study, reader))


@pytest.fixture(scope="module")
def study(runs, tmp_path_factory) -> StudyDir:
    out = tmp_path_factory.mktemp("study") / "s"
    export(ExportRequest(runs=[runs["nn"], runs["constant"], runs["reference"]], out=out, n=N, readers=2, seed=SEED,
                         cache_dir=runs["nn"].parent.parent / "cache"))
    sd = StudyDir(out)
    return_all(sd)
    return sd


@pytest.fixture(scope="module")
def summary(study) -> dict:
    return import_study(study.root, n_bootstrap=200, n_permutations=500, seed=0)


def sentence_counts(runs, study) -> dict[str, list[int]]:
    """Sentences of each selected report, per run, from the predictions files themselves."""
    samples = sorted(json.loads(study.key.read_text())["studies"])
    out = {}
    for name in ("nn", "constant", "reference"):
        preds = {r.id: r.prediction for r in read_predictions(runs[name] / "predictions.jsonl")}
        out[name] = [len(split_sentences(preds[s])) for s in samples]
    return out


def test_export_blinds_selects_and_writes_workbooks(study, runs):
    man = json.loads(study.manifest.read_text())
    key = json.loads(study.key.read_text())["studies"]
    assert man["studies"] == N == len(key)
    assert [r["label"] for r in man["runs"]] == ["nn", "constant", "reference"]
    assert all(r["metric_signatures"]["bleu"].startswith("metric:bleu|") for r in man["runs"])
    # one report per study, every run's report lettered A-C, letters shuffled across studies
    assert len({v["study_id"] for v in key.values()}) == N
    assert all(sorted(v["reports"]) == ["A", "B", "C"] and sorted(v["reports"].values()) ==
               ["constant", "nn", "reference"] for v in key.values())
    assert len({tuple(v["reports"].values()) for v in key.values()}) > 1
    # no reader file names a system; the key is not among the readers' files
    for wb_path in study.workbooks.iterdir():
        text = " ".join(str(c.value) for ws in load_workbook(wb_path) for row in ws.iter_rows() for c in row if c.value)
        assert not any(name in text for name in ("nn", "constant", "reference", "unblinding"))
    items = read_items(study.items)
    assert all("run" not in vars(i) for i in items)
    # each reader reads every study, in their own order
    cases = {r: [i.sample_id for i in items if i.reader == r and i.sentence <= 1 and i.letter == "A"]
             for r in ("reader1", "reader2")}
    assert sorted(cases["reader1"]) == sorted(cases["reader2"]) == sorted(key)
    # the workbook: frozen header, drop-downs on the answer columns, a thumbnail per case, links to full PNGs
    ws = load_workbook(study.workbooks / "reader1.xlsx")["Sentences"]
    assert ws.freeze_panes == "A2"
    formulas = sorted(dv.formula1 for dv in ws.data_validations.dataValidation)
    assert formulas == ['"keep,edit,delete"', '"significant,minor,none"', '"x"']
    assert len(ws._images) == N
    links = {c.hyperlink.target for c in ws["C"] if c.hyperlink}
    assert len(links) == N and all((study.root / "workbooks" / t).resolve().is_file() for t in links)


def test_statistics_match_hand_counts(summary, runs, study):
    n = sentence_counts(runs, study)
    s = summary["systems"]
    R = 2  # readers: each reads every report
    ref, con, nn = s["reference"], s["constant"], s["nn"]
    S_ref, S_con, S_nn = R * sum(n["reference"]), R * sum(n["constant"]), R * sum(n["nn"])
    assert all(x >= 2 for x in n["constant"]) and all(x >= 1 for x in n["nn"])
    # reference: all kept
    assert ref["readings"] == R * N and ref["sentences"] == S_ref and ref["counts"]["keep"] == S_ref
    assert ref["sentences_per_report"] == pytest.approx(S_ref / (R * N))
    assert ref["intervals"]["significant_per_report"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    # constant: one significant edit (2 categories) per reading, the rest deleted (1 category, minor)
    assert con["counts"] == {"keep": 0, "edit": R * N, "delete": S_con - R * N, "changed": S_con}
    assert con["rates"]["changed"] == 1.0 and con["changes_per_report"] == pytest.approx(S_con / (R * N))
    assert con["impact"]["counts"] == {"significant": R * N, "minor": S_con - R * N, "none": 0}
    assert con["impact"]["shares"]["significant"] == pytest.approx(R * N / S_con)
    cats = [2] * (R * N) + [1] * (S_con - R * N)
    assert con["categories"]["per_changed_sentence"]["mean"] == pytest.approx(np.mean(cats))
    assert con["categories"]["per_changed_sentence"]["sd"] == pytest.approx(np.std(cats, ddof=1))
    assert con["categories"]["counts"] == {"omission": R * N, "misclassification": S_con - R * N,
                                           "overspecific": 0, "incorrect location": 0, "other": R * N}
    assert con["categories"]["shares_of_marks"]["omission"] == pytest.approx(R * N / (S_con + R * N))
    assert con["category_by_impact"]["misclassification"] == {"significant": 0, "minor": S_con - R * N, "none": 0}
    assert con["intervals"]["significant_per_report"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert con["intervals"]["reports_with_significant"]["value"] == 1.0
    # nn: first sentence kept; reader1 edits the rest (overspecific, none), reader2 deletes them (other, minor)
    rest = sum(x - 1 for x in n["nn"])
    assert nn["counts"] == {"keep": R * N, "edit": rest, "delete": rest, "changed": 2 * rest}
    assert nn["impact"]["counts"] == {"significant": 0, "minor": rest, "none": rest}
    iv = nn["intervals"]["changed_rate"]
    assert iv["value"] == pytest.approx(2 * rest / S_nn) and iv["low"] <= iv["value"] <= iv["high"]
    # all systems together
    assert summary["all"]["sentences"] == S_ref + S_con + S_nn
    # paired: constant has one more significant error per report than reference, on every reading
    pair = {(p["a"], p["b"], p["statistic"]): p for p in summary["paired"]}
    p = pair[("constant", "reference", "significant_per_report")]
    assert p["difference"] == 1.0 and p["readings"] == R * N and p["studies"] == N
    # studies swap together: only 2 of the 2**4 swap patterns (none, all) give a difference as large
    assert p["p_value"] == pytest.approx(2 / 16, abs=0.05)


def test_agreement_matches_hand_computed_kappa(summary, runs, study):
    n = sentence_counts(runs, study)
    ag = summary["agreement"]
    assert ag["status"] == "ok" and ag["action"]["statistic"] == "Cohen's kappa"
    ref, con, nn = sum(n["reference"]), sum(n["constant"]), sum(n["nn"])
    total, disagree = ref + con + nn, nn - N
    assert ag["action"]["sentences"] == total
    # marginals of the two readers over keep / edit / delete
    r1 = np.array([ref + N, N + disagree, con - N]) / total
    r2 = np.array([ref + N, N, con - N + disagree]) / total
    po, pe = (total - disagree) / total, float(r1 @ r2)
    assert ag["action"]["value"] == pytest.approx((po - pe) / (1 - pe))
    assert ag["action"]["low"] <= ag["action"]["value"] <= ag["action"]["high"]
    # impact, ordinal, kept = none: only nn's later sentences differ (none vs minor)
    import krippendorff

    levels1 = [0] * ref + [2] * N + [1] * (con - N) + [0] * N + [0] * disagree
    levels2 = [0] * ref + [2] * N + [1] * (con - N) + [0] * N + [1] * disagree
    expected = krippendorff.alpha(reliability_data=[levels1, levels2], level_of_measurement="ordinal",
                                  value_domain=[0, 1, 2])
    assert ag["impact"]["value"] == pytest.approx(expected)
    assert 0 < ag["impact"]["value"] < 1


def test_metric_validity_is_kendall_tau_b_per_report(summary, runs, study):
    from scipy.stats import kendalltau

    from bench.metrics.registry import get_metric
    import pandas as pd

    mv = summary["metric_validity"]
    by = {(m["metric"], m["column"]): m for m in mv["metrics"]}
    assert set(by) == {("bleu", "bleu4"), ("rouge", "rougeL")} and mv["unavailable"] == {}
    n = sentence_counts(runs, study)
    samples = sorted(json.loads(study.key.read_text())["studies"])
    rouge = get_metric("rouge")
    xs, ys = [], []
    for name in ("constant", "nn", "reference"):
        rows = pd.read_parquet(runs[name] / "scores.parquet").set_index("id")
        for s, k in zip(samples, n[name]):
            xs.append(rouge.aggregate(rows.loc[[s]].reset_index())["rougeL"])
            changed = {"constant": k, "nn": k - 1, "reference": 0}[name]  # per reader, the same count
            ys.append(changed / k)
    m = by[("rouge", "rougeL")]
    assert m["edit_rate"]["reports"] == 3 * N
    assert m["edit_rate"]["value"] == pytest.approx(kendalltau(xs, ys, variant="b").statistic)
    assert m["edit_rate"]["value"] < 0  # the reference (ROUGE-L 1) is the one readers keep
    assert m["signature"].startswith("metric:rouge|")


def test_import_writes_results_and_plots(summary, study):
    res = study.results
    for name in ("verdicts.csv", "summary.json", "summary.md", "category-impact.png", "actions.png"):
        assert (res / name).stat().st_size > 0
    assert json.loads((res / "summary.json").read_text())["systems"]["constant"]["counts"]["edit"] == 2 * N
    md = (res / "summary.md").read_text()
    assert "| constant |" in md and "Cohen's kappa" in md
    import pandas as pd

    v = pd.read_csv(res / "verdicts.csv")
    assert set(v["run"]) == {"nn", "constant", "reference"} and set(v["source"]) == {"returned/reader1 answers.xlsx",
                                                                                      "returned/reader2 answers.xlsx"}


# -- bad input -------------------------------------------------------------------------------------

def copy_study(study: StudyDir, tmp_path: Path) -> StudyDir:
    dest = tmp_path / "copy"
    shutil.copytree(study.root, dest)
    shutil.rmtree(dest / "results", ignore_errors=True)
    return StudyDir(dest)


def test_value_outside_the_drop_down_names_file_sheet_row_and_field(study, tmp_path):
    sd = copy_study(study, tmp_path)
    wb = load_workbook(sd.returned / "reader1 answers.xlsx")
    ws = wb["Sentences"]
    ws["H3"] = "maybe"  # typed by hand past the drop-down
    wb.save(sd.returned / "reader1 answers.xlsx")
    with pytest.raises(BenchError) as e:
        import_study(sd.root, n_bootstrap=0, n_permutations=10)
    assert "returned/reader1 answers.xlsx, sheet Sentences, row 3" in str(e.value)
    assert "field action: unknown value 'maybe'" in str(e.value)
    assert (sd.results / "problems.txt").exists() and not (sd.results / "summary.json").exists()


def test_edit_without_category_impact_on_kept_and_missing_row(study, tmp_path):
    sd = copy_study(study, tmp_path)
    wb = load_workbook(sd.returned / "reader2 answers.xlsx")
    ws = wb["Sentences"]
    header = [c.value for c in ws[1]]
    col = {h: i for i, h in enumerate(header)}
    rows = list(ws.iter_rows(min_row=2))
    kept = next(r for r in rows if r[col["action"]].value == "keep")
    kept[col["impact"]].value = "minor"
    edited = next(r for r in rows if r[col["action"]].value in ("edit", "delete"))
    for c in ("omission", "misclassification", "overspecific", "incorrect location", "other"):
        edited[col[c]].value = None
    ws.delete_rows(ws.max_row)
    wb.save(sd.returned / "reader2 answers.xlsx")
    with pytest.raises(BenchError):
        import_study(sd.root, n_bootstrap=0, n_permutations=10)
    problems = (sd.results / "problems.txt").read_text()
    assert f"row {kept[0].row} ({kept[0].value}), field impact: an impact on a kept sentence" in problems
    assert f"row {edited[0].row} ({edited[0].value}), field categories:" in problems
    assert "without an error category" in problems
    assert "is missing; rows must stay as sent" in problems


def test_a_workbook_returned_twice(study, tmp_path):
    sd = copy_study(study, tmp_path)
    shutil.copy(sd.returned / "reader1 answers.xlsx", sd.returned / "reader1 again.xlsx")
    with pytest.raises(BenchError, match="the workbook of reader1 is returned twice"):
        import_study(sd.root, n_bootstrap=0, n_permutations=10)


def test_nothing_returned_is_an_error_and_partial_says_what_is_left_out(study, tmp_path):
    sd = copy_study(study, tmp_path)
    (sd.returned / "reader2 answers.xlsx").unlink()
    with pytest.raises(BenchError, match="reader2 has returned nothing"):
        import_study(sd.root, n_bootstrap=0, n_permutations=10)
    s = import_study(sd.root, partial=True, n_bootstrap=0, n_permutations=10)
    assert s["systems"]["constant"]["readings"] == N and any("reader2" in x for x in s["left_out"])
    assert s["agreement"]["status"] == "unavailable"


def test_runs_with_no_study_in_common(runs, tmp_path):
    halves = []
    for k, part in enumerate((slice(0, 8), slice(8, 16))):
        d = tmp_path / f"half{k}"
        shutil.copytree(runs["nn"], d)
        ident = json.loads((d / "run-identity.json").read_text())
        ident["label"] = f"half{k}"
        (d / "run-identity.json").write_text(json.dumps(ident))
        lines = (d / "predictions.jsonl").read_text().splitlines()[part]
        (d / "predictions.jsonl").write_text("\n".join(lines) + "\n")
        halves.append(d)
    with pytest.raises(BenchError, match="the runs have no study in common"):
        export(ExportRequest(runs=halves, out=tmp_path / "s", n=2, cache_dir=runs["nn"].parent.parent / "cache"))
    assert not (tmp_path / "s").exists()


def test_empty_predictions_are_kept_as_empty_reports(runs, tmp_path):
    out = tmp_path / "s"
    export(ExportRequest(runs=[runs["nn"], runs["blanked"]], out=out, n=16, readers=1, seed=0,
                         cache_dir=runs["nn"].parent.parent / "cache"))
    sd = StudyDir(out)
    blanked = {r.id for r in read_predictions(runs["blanked"] / "predictions.jsonl") if not r.prediction}
    man = json.loads(sd.manifest.read_text())
    key = json.loads(sd.key.read_text())["studies"]
    selected_blank = {s for s in key if s in blanked}
    assert selected_blank and len(man["empty_reports"]) == len(selected_blank)
    empty_rows = [i for i in read_items(sd.items) if i.empty]
    assert {i.sample_id for i in empty_rows} == selected_blank
    assert all(key[i.sample_id]["reports"][i.letter] == "blanked" for i in empty_rows)
    ws = load_workbook(sd.workbooks / "reader1.xlsx")["Sentences"]
    assert sum(1 for c in ws["G"] if c.value and str(c.value).startswith("(empty report")) == len(selected_blank)
    fill_workbook(sd.workbooks / "reader1.xlsx", sd.returned / "r1.xlsx",
                  {it.row: rule(key[it.sample_id]["reports"][it.letter], "reader1", it.sentence)
                   for it in read_items(sd.items) if not it.empty})
    s = import_study(sd.root, n_bootstrap=0, n_permutations=10)
    assert s["systems"]["blanked"]["empty_reports"] == len(selected_blank)
    assert s["systems"]["blanked"]["readings"] == len(key)


def test_cli_errors_are_one_line(tmp_path, capfd):
    from bench.cli import main

    for args, text in ((["reader-study", "import", str(tmp_path)], "is not a reader-study directory"),
                       (["reader-study", "export", "--runs", str(tmp_path), "--out", str(tmp_path / "s")],
                        "neither a run directory nor a directory of runs")):
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capfd.readouterr().err
        assert e.value.code == 2 and text in err and "Traceback" not in err
        assert len([x for x in err.splitlines() if x.strip()]) == 1


# -- the statistics' own implementations against the reference libraries ----------------------------

def test_kappa_and_tau_b_equal_the_reference_libraries():
    import pandas as pd
    from scipy.stats import kendalltau
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import fleiss_kappa

    from readerstudy.agreement import Kappa, tau_b
    from readerstudy.schema import ACTIONS

    rng = np.random.default_rng(0)
    acts = np.array(ACTIONS)
    base = rng.integers(0, 3, 60)
    noisy = [np.where(rng.random(60) < 0.3, rng.integers(0, 3, 60), base) for _ in range(3)]
    rows = pd.DataFrame({f"r{i}": acts[v] for i, v in enumerate(noisy)})
    two = Kappa(["r0", "r1"]).aggregate(rows)["value"]
    assert two == pytest.approx(cohen_kappa_score(rows["r0"], rows["r1"], labels=list(ACTIONS)))
    three = Kappa(["r0", "r1", "r2"]).aggregate(rows)["value"]
    table = np.stack([(rows[["r0", "r1", "r2"]].to_numpy() == a).sum(1) for a in ACTIONS], axis=1)
    assert three == pytest.approx(fleiss_kappa(table, method="fleiss"))
    x = rng.integers(0, 5, 40).astype(float)  # ties on both sides
    y = x + rng.integers(-2, 3, 40)
    assert tau_b(x, y) == pytest.approx(kendalltau(x, y, variant="b").statistic)
    assert np.isnan(tau_b(np.ones(5), np.arange(5.0)))


def test_selection_stratifies_deals_and_is_seeded():
    from bench.data.records import Sample
    from readerstudy.selection import is_normal, select

    normal, abnormal = "No acute cardiopulmonary process.", "Large right pleural effusion."
    assert is_normal(normal) and not is_normal(abnormal)
    samples = [Sample(f"s{i:02d}", f"s{i:02d}", f"st{i:02d}", "p", "test", "PA", Path("x.jpg"),
                      normal if i < 12 else abnormal) for i in range(20)]
    sel = select(samples, ["a", "b", "c"], n=10, readers=["r1", "r2", "r3"], seed=4, stratify=True, reads_per_study=2)
    refs = [s.findings for s in sel.samples]
    assert refs.count(normal) == 5 and refs.count(abnormal) == 5
    reads = [sid for ids in sel.readings.values() for sid in ids]
    assert len(reads) == 20 and all(reads.count(s.id) == 2 for s in sel.samples)  # each study read twice
    assert all(len(set(ids)) == len(ids) for ids in sel.readings.values())  # never twice by one reader
    assert sorted(len(ids) for ids in sel.readings.values()) == [6, 7, 7]
    again = select(samples, ["a", "b", "c"], n=10, readers=["r1", "r2", "r3"], seed=4, stratify=True, reads_per_study=2)
    assert again == sel
    with pytest.raises(BenchError, match="abnormal studies asked for"):
        select(samples, ["a"], n=20, readers=["r1"], seed=0, stratify=True)
    with pytest.raises(BenchError, match="--reads-per-study must be between 1 and the number of readers"):
        select(samples, ["a"], n=2, readers=["r1"], seed=0, reads_per_study=2)


def test_unscored_run_makes_metric_validity_unavailable_with_the_reason(runs, tmp_path):
    unscored = tmp_path / "unscored"
    shutil.copytree(runs["constant"], unscored)
    (unscored / "aggregate.json").unlink()
    (unscored / "scores.parquet").unlink()
    ident = json.loads((unscored / "run-identity.json").read_text())
    ident["label"] = "unscored"
    (unscored / "run-identity.json").write_text(json.dumps(ident))
    sd = StudyDir(tmp_path / "s")
    export(ExportRequest(runs=[runs["nn"], unscored], out=sd.root, n=2, readers=1, seed=0,
                         cache_dir=runs["nn"].parent.parent / "cache"))
    key = json.loads(sd.key.read_text())["studies"]
    fill_workbook(sd.workbooks / "reader1.xlsx", sd.returned / "r1.xlsx",
                  {it.row: {"action": "keep"} for it in read_items(sd.items) if not it.empty})
    s = import_study(sd.root, n_bootstrap=0, n_permutations=10)
    assert s["metric_validity"]["metrics"] == []
    assert "run unscored is not scored" in s["metric_validity"]["unavailable"]["(all metrics)"]
    assert s["systems"]["unscored"]["rates"]["keep"] == 1.0 and len(key) == 2
    # the rows file is what answers are matched through: a changed one is refused
    with sd.items.open("a") as fh:
        fh.write("\n")
    with pytest.raises(BenchError, match="items.jsonl changed since the export"):
        import_study(sd.root, n_bootstrap=0, n_permutations=10)


def test_missing_extra_is_a_one_line_remedy(monkeypatch):
    import importlib.util

    from readerstudy import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openpyxl" else real(name, *a))
    with pytest.raises(BenchError, match=r"reader studies need openpyxl.*pip install 'saerad-bench\[reader-study\]'"):
        cli.need("openpyxl", "jinja2")


def test_a_failed_export_leaves_nothing_behind(runs, tmp_path, monkeypatch):
    import readerstudy.export as ex

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ex, "write_workbook", broken)  # fault injection: the last step fails
    with pytest.raises(OSError, match="disk full"):
        export(ExportRequest(runs=[runs["nn"], runs["constant"]], out=tmp_path / "s", n=2,
                             cache_dir=runs["nn"].parent.parent / "cache"))
    assert not (tmp_path / "s").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError):
        export(ExportRequest(runs=[runs["nn"], runs["constant"]], out=tmp_path / "empty", n=2,
                             cache_dir=runs["nn"].parent.parent / "cache"))
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_readers_dealt_no_study_are_not_waited_for(runs, tmp_path):
    sd = StudyDir(tmp_path / "s")
    export(ExportRequest(runs=[runs["nn"], runs["reference"]], out=sd.root, n=1, readers=3, reads_per_study=1,
                         seed=0, cache_dir=runs["nn"].parent.parent / "cache"))
    rows = read_items(sd.items)
    assert {i.reader for i in rows} == {"reader1"}
    fill_workbook(sd.workbooks / "reader1.xlsx", sd.returned / "r1.xlsx",
                  {it.row: {"action": "keep"} for it in rows if not it.empty})
    s = import_study(sd.root, n_bootstrap=0, n_permutations=10)
    assert s["sources"] == {"reader1": "returned/r1.xlsx"} and s["left_out"] == []
    assert s["all"]["readings"] == 2


def test_export_refuses_a_run_whose_data_changed(runs, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(runs["nn"], moved)
    ident = json.loads((moved / "run-identity.json").read_text())
    ident["fingerprint"] = "0" * 16  # as if the dataset under the run had been regenerated since
    (moved / "run-identity.json").write_text(json.dumps(ident))
    with pytest.raises(BenchError, match="changed since .* was generated"):
        export(ExportRequest(runs=[moved], out=tmp_path / "s", n=1, cache_dir=runs["nn"].parent.parent / "cache"))


def test_a_metric_value_that_cannot_be_reproduced_is_not_used(runs, tmp_path):
    from readerstudy.runs import per_report_metrics

    tampered = tmp_path / "tampered"
    shutil.copytree(runs["nn"], tampered)
    agg = json.loads((tampered / "aggregate.json").read_text())
    agg["metrics"]["rouge"]["values"]["rougeL"]["value"] += 0.01  # as if scored with other settings
    (tampered / "aggregate.json").write_text(json.dumps(agg))
    ids = [r.id for r in read_predictions(tampered / "predictions.jsonl")][:3]
    values, columns, unavailable = per_report_metrics(tampered, ids)
    assert "cannot be reproduced" in unavailable["rouge"] and ("rouge", "rougeL") not in values
    # BLEU on one report is the corpus formula on that report's row, from its own n-gram counts
    import pandas as pd

    row = pd.read_parquet(tampered / "scores.parquet").set_index("id").loc[ids[0]]
    p = [row[f"bleu_correct{n}"] / row[f"bleu_guess{n}"] for n in range(1, 5)]
    bp = min(1.0, np.exp(1 - row["bleu_reflen"] / row["bleu_testlen"]))
    assert values[("bleu", "bleu4")][ids[0]] == pytest.approx(bp * np.exp(np.mean(np.log(p))), rel=1e-6)
