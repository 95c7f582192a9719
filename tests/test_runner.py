"""End to end: phantom dataset -> systems -> predictions -> scores -> leaderboard."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.errors import BenchError, DataError, UnknownNameError
from bench.runner import RunConfig, run

METRICS = ["bleu", "rouge"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    from bench.data.phantom import generate

    root = tmp_path_factory.mktemp("phantom")
    generate(root, n_train=60, n_test=16, seed=3, image_size=64)
    return root


def cfg(tmp_path, phantom, tiny_encoder, system="reference", **kw) -> RunConfig:
    base = dict(system=system, data_root=phantom, metrics=METRICS, out=tmp_path / "run" / system,
                encoder=tiny_encoder, n_bootstrap=50, cache_dir=tmp_path / "cache")
    base.update(kw)
    return RunConfig(**base)


def test_reference_run_writes_every_file_and_scores_perfectly(tmp_path, phantom, tiny_encoder):
    out = run(cfg(tmp_path, phantom, tiny_encoder))
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 16 and all(p["prediction"] == p["reference"] for p in preds)
    agg = json.loads((out / "aggregate.json").read_text())
    assert agg["metrics"]["bleu"]["values"]["bleu4"]["value"] == pytest.approx(1.0)
    assert agg["metrics"]["rouge"]["values"]["rougeL"]["value"] == pytest.approx(1.0)
    rows = pd.read_parquet(out / "scores.parquet")
    assert rows["id"].tolist() == [p["id"] for p in preds]
    man = json.loads((out / "manifest.json").read_text())
    for key in ("config", "versions", "git", "datasets", "timings", "skipped", "host"):
        assert key in man
    assert man["datasets"]["test"]["fingerprint"] and man["versions"]["torch"]


def test_nn_predicts_the_findings_of_the_closest_training_token(tmp_path, phantom, tiny_encoder):
    out = run(cfg(tmp_path, phantom, tiny_encoder, system="nn"))
    man = json.loads((out / "manifest.json").read_text())
    assert man["encoder"]["fingerprint"]
    from bench.data.mimic import load_split
    from bench.encoders import load_encoder, load_tokens

    fp = load_encoder(tiny_encoder).fingerprint
    train, test = load_split(phantom, "train"), load_split(phantom, "test")
    tr = load_tokens(tmp_path / "cache" / "tokens", fp, [s.dicom_id for s in train.samples]).astype(np.float64)
    te = load_tokens(tmp_path / "cache" / "tokens", fp, [s.dicom_id for s in test.samples]).astype(np.float64)
    nearest = ((te[:, None] - tr[None]) ** 2).sum(-1).argmin(1)
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for p, j in zip(preds, nearest):
        assert p["provenance"]["neighbour_dicom_id"] == train.samples[j].dicom_id
        assert p["prediction"] == train.samples[j].findings


def test_killed_run_resumes_without_regenerating(tmp_path, phantom, tiny_encoder, monkeypatch):
    c = cfg(tmp_path, phantom, tiny_encoder)
    out = run(c)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    # Simulate a kill: 10 complete lines and half of the 11th.
    (out / "predictions.jsonl").write_text("\n".join(lines[:10]) + "\n" + lines[10][:25])
    from baselines.reference import ReferenceSystem

    seen = []
    original = ReferenceSystem.generate

    def counting(self, samples, ctx):
        seen.extend(s.id for s in samples)
        return original(self, samples, ctx)

    monkeypatch.setattr(ReferenceSystem, "generate", counting)
    run(c)
    assert len(seen) == 6
    assert (out / "predictions.jsonl").read_text().splitlines() == lines or \
        sorted((out / "predictions.jsonl").read_text().splitlines()) == sorted(lines)


def test_run_dir_is_tied_to_its_configuration(tmp_path, phantom, tiny_encoder):
    run(cfg(tmp_path, phantom, tiny_encoder))
    with pytest.raises(BenchError, match="another configuration"):
        run(cfg(tmp_path, phantom, tiny_encoder, split="validate"))


def test_corrupt_and_truncated_images_are_skipped_and_listed(tmp_path, phantom, tiny_encoder):
    root = tmp_path / "data"
    shutil.copytree(phantom, root)
    from bench.data.mimic import load_split

    victims = [s.image_path for s in load_split(root, "test").samples[:2]]
    victims[0].write_bytes(b"not a jpeg at all")
    data = victims[1].read_bytes()
    victims[1].write_bytes(data[: len(data) // 2])
    out = run(cfg(tmp_path, root, tiny_encoder, system="nn"))
    man = json.loads((out / "manifest.json").read_text())
    skipped = {s["path"] for s in man["skipped"]["test"]}
    assert {str(v) for v in victims} <= skipped
    assert json.loads((out / "aggregate.json").read_text())["n"] == 14


def test_bad_inputs_give_clear_errors(tmp_path, phantom, tiny_encoder):
    with pytest.raises(DataError, match="does not exist"):
        run(cfg(tmp_path, tmp_path / "nowhere", tiny_encoder))
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(phantom / "mimic-cxr-2.0.0-metadata.csv.gz", partial)
    with pytest.raises(DataError, match="mimic-cxr-2.0.0-split.csv"):
        run(cfg(tmp_path, partial, tiny_encoder, out=tmp_path / "p"))
    with pytest.raises(UnknownNameError, match="choose one of"):
        run(cfg(tmp_path, phantom, tiny_encoder, system="gpt-9"))
    with pytest.raises(UnknownNameError, match="bleu"):
        run(cfg(tmp_path, phantom, tiny_encoder, metrics=["blue"], out=tmp_path / "other"))


def test_cli_score_handles_empty_predictions_and_leaderboard(tmp_path, phantom, tiny_encoder):
    from bench.cli import app

    f = tmp_path / "preds.jsonl"
    f.write_text(json.dumps({"id": "a", "reference": "No effusion.", "prediction": ""}) + "\n"
                 + json.dumps({"id": "b", "reference": "No effusion.", "prediction": "No effusion."}) + "\n")
    res = CliRunner().invoke(app, ["score", "--predictions", str(f), "-m", "bleu,rouge", "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["empty_predictions"] == 1
    assert out["metrics"]["rouge"]["values"]["rougeL"]["value"] == pytest.approx(0.5)

    run(cfg(tmp_path, phantom, tiny_encoder, out=tmp_path / "board" / "reference"))
    run(cfg(tmp_path, phantom, tiny_encoder, system="constant", out=tmp_path / "board" / "constant"))
    res = CliRunner().invoke(app, ["leaderboard", "--runs", str(tmp_path / "board")])
    assert res.exit_code == 0, res.output
    assert "| reference | 100.0" in res.stdout and "| constant |" in res.stdout


def test_compare_runs_paired_test(tmp_path, phantom, tiny_encoder):
    from bench.compare import compare_runs

    a = run(cfg(tmp_path, phantom, tiny_encoder, out=tmp_path / "cmp" / "reference"))
    b = run(cfg(tmp_path, phantom, tiny_encoder, system="constant", out=tmp_path / "cmp" / "constant"))
    same, _ = compare_runs(a, a, n_permutations=200)
    assert all(r.p_value == 1.0 for r in same)
    diff, _ = compare_runs(a, b, n_permutations=200)
    by_col = {r.column: r for r in diff}
    assert by_col["rougeL"].a == pytest.approx(1.0) and by_col["rougeL"].p_value < 0.01
    from bench.cli import app

    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--permutations", "100", "--json"])
    assert res.exit_code == 0, res.output
    assert {"bleu4", "rougeL"} <= {c["column"] for c in json.loads(res.stdout)["comparisons"]}


def test_metric_options_parse_and_reject_malformed():
    from bench.cli import _parse_metric_opts

    assert _parse_metric_opts(["rger.model_type=radgraph", "rger.device=cuda", "chexbert.batch_size=8"]) == {
        "rger": {"model_type": "radgraph", "device": "cuda"}, "chexbert": {"batch_size": "8"}}
    with pytest.raises(BenchError, match="metric.key=value"):
        _parse_metric_opts(["model_type=radgraph"])
