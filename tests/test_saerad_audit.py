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
from saerad.audit import (asserts, audit_run, explain_gap, feature_aurocs, gap_stratum, markdown, recall_precision,
                          sparse_probe_auroc)

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
        assert 0.0 <= f.feature_fire_rate <= 1.0
        assert (f.gap_stratum is None) or f.sae_loses  # only flagged findings are stratified
        assert f.gap_explained_by == (explain_gap(f.feature_auroc, f.probe_as_sparse, f.gap_stratum)
                                      if f.sae_loses else "")

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


def test_the_probe_made_as_sparse_as_a_feature():
    # Training scores 1..10: firing on 30% of them puts the threshold at their 0.7 quantile, 7.3.
    train = np.arange(1.0, 11.0)
    test = np.array([9.0, 8.0, 7.0, 6.0, 2.0, 1.0])
    y = np.array([1, 0, 1, 1, 0, 0])
    # Sparse scores: 1.7, 0.7, then four zeros. Positive-negative pairs: (9 vs 8) won, (9 vs the
    # two zeros) won; each of the two zero-scored positives beats nothing, ties three negatives... by
    # hand: pairs (pos, neg) = 3 x 3 = 9; wins: 9>8, 9>2, 9>1; ties: 7~2, 7~1, 6~2, 6~1 (0.5 each);
    # losses: 7<8, 6<8. AUROC = (3 + 4 * 0.5) / 9.
    assert sparse_probe_auroc(train, test, y, 0.3) == pytest.approx(5 / 9)
    # Firing on every training image keeps the ranking: the dense probe's AUROC.
    assert sparse_probe_auroc(train, test, y, 1.0) == pytest.approx(feature_aurocs(test[:, None], y)[0])
    assert math.isnan(sparse_probe_auroc(train, test, y, 0.0))


def test_the_stratum_that_explains_a_gap():
    rng = np.random.default_rng(0)
    n = 400
    other = (rng.random(n) < 0.3).astype(int)  # a co-occurring finding that hides the target
    y = (rng.random(n) < 0.25).astype(int)
    signal = y + 0.3 * rng.standard_normal(n)
    # Where `other` is present neither score sees the target; the feature is silent there, the
    # probe ranks those images in the middle. Within each stratum the two order images alike.
    feature = np.where(other == 1, 0.0, np.maximum(signal, 0.0))
    probe = np.where(other == 1, 0.5, signal)
    # Over all images the probe wins: it ranks the hidden images above the silent feature's zeros.
    assert feature_aurocs(probe[:, None], y)[0] > feature_aurocs(feature[:, None], y)[0] + 0.03
    unrelated = (rng.random(n) < 0.5).astype(int)
    found = gap_stratum(feature, probe, y, {"unrelated": unrelated, "hider": other})
    assert found is not None and found["finding"] == "hider"
    for part, m in (("without", other == 0), ("with", other == 1)):
        assert found[part]["n"] == int(m.sum()) and found[part]["positives"] == int(y[m].sum())
        assert found[part]["feature"] == pytest.approx(feature_aurocs(feature[m][:, None], y[m])[0])
        assert found[part]["probe"] == pytest.approx(feature_aurocs(probe[m][:, None], y[m])[0])
    assert found["largest_gap"] <= 0.03
    # With only the unrelated finding to split on, the gap is not explained.
    assert gap_stratum(feature, probe, y, {"unrelated": unrelated}) is None


def test_what_a_flagged_gap_is_put_down_to():
    stratum = {"finding": "edema"}
    assert explain_gap(0.80, 0.90, stratum) == "strata"  # strata first: they explain any size of gap
    assert explain_gap(0.78, 0.80, None) == "sparsity"  # within 0.03 of the probe at its sparsity
    assert explain_gap(0.80, 0.84, None) == ""  # a loss in the SAE itself
    assert explain_gap(0.80, math.nan, None) == ""
