"""`bench features audit`: a saerad run on a small phantom, audited per planted finding."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.data.phantom.findings import FINDINGS
from bench.errors import BenchError
from bench.stages.data import DataConfig
from bench.stages.run import RunRequest
from bench.stages.run import run as run_request
from saerad.audit import asserts, audit_run, feature_aurocs, markdown, recall_precision

SMALL = {"expansion": "4", "steps": "150", "batch_size": "64", "lr": "3e-3", "target_l0": "0"}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    from bench.data.phantom import generate

    root = tmp_path_factory.mktemp("phantom")
    generate(root, n_train=80, n_test=20, seed=5, image_size=64)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _run(out: Path, system: str, phantom: Path, enc: str, cache: Path, opts=None) -> Path:
    req = RunRequest(systems=[system], system_options={system: opts or {}},
                     data=DataConfig(data_root=phantom, encoder=enc, cache_dir=cache),
                     metrics=["rouge"], out=out, n_bootstrap=10)
    return run_request(req)[1][0]


@pytest.fixture(scope="module")
def saerad_run(tmp_path_factory, phantom, tiny_encoder, cache) -> Path:
    return _run(tmp_path_factory.mktemp("runs"), "saerad", phantom, tiny_encoder, cache, SMALL)


def test_audit_table_and_hand_count(saerad_run, phantom, cache):
    a = audit_run(saerad_run, cache_dir=cache)
    assert len(a.findings) == 13 and [f.finding for f in a.findings] == list(FINDINGS)
    assert a.n_test == 20 and a.n_train > 0
    for f in a.findings:
        for x in (f.probe_auroc, f.feature_auroc):
            assert math.isnan(x) or 0.0 <= x <= 1.0
        if f.test_pos == 0:
            assert math.isnan(f.probe_auroc) and math.isnan(f.feature_auroc) and f.weak_stage == "absent"
            assert math.isnan(f.report_recall)
        for x in (f.report_recall, f.report_precision, f.fired_recall, f.fired_precision, f.label_enriched):
            assert math.isnan(x) or 0.0 <= x <= 1.0
        # the check: flagged exactly where the probe carries it and the SAE's best feature does not
        assert f.sae_loses == (f.probe_auroc >= 0.8 and f.feature_auroc < f.probe_auroc - 0.03)

    # Hand count over the predictions for the finding most often planted in the test images.
    preds = [json.loads(line) for line in (saerad_run / "predictions.jsonl").read_text().splitlines()]
    table = pd.read_csv(phantom / "phantom-labels.csv.gz", dtype={"dicom_id": str}).set_index("dicom_id")
    f = max(a.findings, key=lambda r: r.test_pos)
    truth = [bool(table.loc[p["id"], f.finding]) for p in preds]
    said = [f.finding in asserts(p["prediction"]) for p in preds]
    fired = [any(f.finding in asserts(x.get("description")) for x in p["provenance"]["active_features"])
             for p in preds]
    tp = sum(t and s for t, s in zip(truth, said))
    assert f.test_pos == sum(truth) > 0 and f.n_asserted == sum(said)
    assert f.report_recall == pytest.approx(tp / sum(truth))
    if sum(said):
        assert f.report_precision == pytest.approx(tp / sum(said))
    else:
        assert math.isnan(f.report_precision)
    ftp = sum(t and s for t, s in zip(truth, fired))
    assert f.fired_recall == pytest.approx(ftp / sum(truth))

    md = markdown(a)
    assert md.count("\n| ") == 14  # header + 13 findings (the separator starts with "|---")


def test_cli_markdown_and_json(saerad_run, cache, tmp_path):
    from saerad.cli import features_app

    out = tmp_path / "audit.json"
    res = CliRunner().invoke(features_app, ["audit", "--run", str(saerad_run), "--cache-dir", str(cache),
                                            "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert len(doc["findings"]) == 13 and isinstance(doc["flagged"], list)


def test_not_saerad_or_not_phantom(tmp_path, phantom, tiny_encoder, cache, saerad_run):
    nn_run = _run(tmp_path / "nn", "nn", phantom, tiny_encoder, cache)
    with pytest.raises(BenchError, match="not saerad"):
        audit_run(nn_run, cache_dir=cache)
    with pytest.raises(BenchError, match="not a run directory"):
        audit_run(tmp_path, cache_dir=cache)
    # A saerad run whose data root holds no planted labels.
    fake = tmp_path / "fake"
    fake.mkdir()
    man = json.loads((saerad_run / "manifest.json").read_text())
    man["generate"]["identity"]["data_root"] = str(tmp_path)
    (fake / "manifest.json").write_text(json.dumps(man))
    (fake / "predictions.jsonl").write_text((saerad_run / "predictions.jsonl").read_text())
    with pytest.raises(BenchError, match="not a phantom dataset"):
        audit_run(fake, cache_dir=cache)
    from saerad.cli import features_app

    res = CliRunner().invoke(features_app, ["audit", "--run", str(nn_run)])
    assert res.exit_code == 2 and "not saerad" in res.output


def test_pieces():
    acts = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
    y = np.array([0, 0, 1, 1])
    assert feature_aurocs(acts, y).tolist() == [1.0, 0.5]  # ties count half
    from sklearn.metrics import roc_auc_score

    assert feature_aurocs(acts, y)[1] == roc_auc_score(y, acts[:, 1])
    assert all(math.isnan(x) for x in feature_aurocs(acts, np.zeros(4)))
    assert recall_precision(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])) == (0.5, 0.5)
    r, p = recall_precision(np.array([0, 0]), np.array([0, 0]))
    assert math.isnan(r) and math.isnan(p)
