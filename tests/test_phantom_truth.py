"""`phantom-truth`: reports read with the phantom's labeller, scored against the planted findings."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.data.phantom import FINDINGS, generate
from bench.data.phantom.findings import assign_ids, dicom_id, sample_split
from bench.data.phantom.generate import LABELS_TABLE, MANIFEST, _write_gz_csv
from bench.data.phantom.reports import findings_and_impression
from bench.metrics.phantom_truth import (ABSENT, LABELLER_VERSION, NOT_MENTIONED, PRESENT, PhantomTruthMetric,
                                         asserted_matrix, assertions)
from bench.metrics.registry import get_metric
from bench.predictions import PredictionRecord
from bench.stages.data import DataConfig, open_context
from bench.stages.score import join_references, references_from_file, score
from bench.stats.bootstrap import bootstrap_distribution

SEED = 21


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    generate(root, n_train=10, n_test=60, seed=SEED, image_size=64)
    return root


@pytest.fixture(scope="module")
def ds(phantom, tmp_path_factory):
    _, ds = open_context(DataConfig(data_root=phantom, cache_dir=tmp_path_factory.mktemp("cache")))
    return ds


@pytest.fixture(scope="module")
def ds_study(phantom, tmp_path_factory):
    _, ds = open_context(DataConfig(data_root=phantom, cache_dir=tmp_path_factory.mktemp("cache"), unit="study"))
    return ds


def score_texts(ds, texts: dict[str, str], n_bootstrap: int = 50):
    """Score predictions against a dataset the way `bench score --predictions FILE` does."""
    inp = join_references([PredictionRecord(i, t) for i, t in texts.items()], ds)
    return score(inp.ids, inp.references, inp.predictions, ["phantom-truth"], n_bootstrap=n_bootstrap, seed=0,
                 study_ids=inp.study_ids, data=inp.dataset)


def values(result) -> dict[str, float]:
    entry = result.metrics["phantom-truth"]
    assert entry["status"] == "ok", entry.get("reason")
    return {k: v["value"] for k, v in entry["values"].items()}


# -- the labeller --------------------------------------------------------------------

def test_labeller_reads_the_generators_phrasings():
    """Every planted finding of a generated findings section is read back as present, and
    nothing unplanted is; impressions summarise, so they are only checked for false claims."""
    studies = sample_split("test", 1500, 5)
    assign_ids(studies, 5)
    sections = [findings_and_impression(st, np.random.default_rng([5, 505, 3, i])) for i, st in enumerate(studies)]
    truth = np.array([[st.has(f) for f in FINDINGS] for st in studies])
    found = asserted_matrix([f for f, _ in sections]).astype(bool)
    per_finding = (truth & found).sum(0) / truth.sum(0)
    assert truth.sum(0).min() > 50  # every finding is planted often enough to measure
    assert per_finding.min() >= 0.98, dict(zip(FINDINGS, per_finding))
    assert (found & ~truth).sum() == 0
    impressions = asserted_matrix([imp for _, imp in sections]).astype(bool)
    assert (impressions & ~truth).sum() == 0


def test_assertions_three_ways():
    said = assertions("Mild cardiomegaly. No pneumothorax. Possible small left- sided pleural\neffusion.")
    assert said["cardiomegaly"] == PRESENT
    assert said["pneumothorax"] == ABSENT
    assert said["pleural_effusion_left"] == PRESENT  # hedged, and rejoined across the line break
    assert said["edema"] == NOT_MENTIONED
    assert set(said) == set(FINDINGS)
    assert asserted_matrix([""]).sum() == 0


# -- scoring a dataset ---------------------------------------------------------------

def test_references_score_high_and_empty_predictions_score_zero(ds, phantom):
    refs = values(score_texts(ds, {s.id: s.findings for s in ds.samples}))
    assert refs["phantom_truth_mi"] >= 0.97
    assert refs["phantom_truth_ma"] >= 0.9
    assert {f"phantom_truth_f1_{f}" for f in FINDINGS} <= set(refs)

    result = score_texts(ds, {s.id: "" for s in ds.samples})
    empty = values(result)
    assert empty["phantom_truth_mi"] == 0.0 and empty["phantom_truth_ma"] == 0.0
    stats = PhantomTruthMetric().sufficient_statistics(result.rows).reshape(len(ds), len(FINDINGS), 3).sum((0, 1))
    tp, fp, fn = stats
    assert tp == 0 and fp == 0 and fn > 0  # recall 0: every planted finding missed

    entry = result.metrics["phantom-truth"]
    sha = hashlib.sha256((phantom / LABELS_TABLE).read_bytes()).hexdigest()[:16]
    assert entry["signature"]["settings"]["labels"] == sha
    assert entry["signature"]["settings"]["labeller"] == LABELLER_VERSION
    assert entry["metadata"]["columns"] == [{"key": "phantom_truth_mi", "header": "Truth Mi-F1"},
                                            {"key": "phantom_truth_ma", "header": "Truth Ma-F1"}]


def test_study_level_ids_map_through_study_id(ds_study, ds):
    assert ds_study.unit == "study" and all(s.id == s.study_id for s in ds_study.samples)
    refs = values(score_texts(ds_study, {s.id: s.findings for s in ds_study.samples}))
    assert refs["phantom_truth_mi"] >= 0.97
    labels = pd.read_csv(Path(ds_study.root) / LABELS_TABLE, dtype={"study_id": str}).drop_duplicates("study_id")
    truth = labels.set_index("study_id").loc[[s.id for s in ds_study.samples], list(FINDINGS)].to_numpy()
    result = score_texts(ds_study, {s.id: "" for s in ds_study.samples}, n_bootstrap=0)
    assert (result.rows[PhantomTruthMetric().truth_columns()].to_numpy() == truth).all()


def _hand_root(root: Path, seed: int, planted: list[set[str]], split: str = "test") -> list[str]:
    """A minimal phantom root: phantom.json and a labels file of one frontal image per study."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, names in enumerate(planted):
        study = 50_000_000 + k
        rows.append({"dicom_id": dicom_id(seed, study, 0), "subject_id": 10_000_000 + k, "study_id": study,
                     "split": split, "ViewPosition": "PA", **{f: int(f in names) for f in FINDINGS}})
    _write_gz_csv(pd.DataFrame(rows), root / LABELS_TABLE)
    (root / MANIFEST).write_text(json.dumps({"seed": seed, "findings": list(FINDINGS)}))
    return [r["dicom_id"] for r in rows]


def test_hand_computed_micro_and_macro(tmp_path):
    ids = _hand_root(tmp_path / "hand", 3, [{"cardiomegaly", "pneumothorax"}, {"edema"}, set()])
    predictions = [
        "Mild cardiomegaly. No pneumothorax.",  # cardiomegaly TP, pneumothorax FN (asserted absent)
        "Possible mild pulmonary edema. Small left pleural effusion.",  # edema TP (hedged), left effusion FP
        "Median sternotomy wires.",  # sternotomy wires FP
    ]
    data = {"root": str(tmp_path / "hand"), "name": "hand", "fingerprint": "", "split": "test", "unit": "image"}
    result = score(ids, ["unused"] * 3, predictions, ["phantom-truth"], n_bootstrap=20, data=data)
    got = values(result)
    # tp = 2, fp = 2, fn = 1 -> micro 2*2 / (2*2 + 2 + 1); per finding F1 is 1 for cardiomegaly
    # and edema and 0 for the other 11 (no support and no claims count as 0).
    assert got["phantom_truth_mi"] == pytest.approx(4 / 7)
    assert got["phantom_truth_ma"] == pytest.approx(2 / 13)
    assert got["phantom_truth_f1_cardiomegaly"] == 1.0 and got["phantom_truth_f1_pneumothorax"] == 0.0


# -- unavailable and refused ---------------------------------------------------------

def test_unavailable_without_a_dataset(ds, tmp_path):
    records = [PredictionRecord(s.id, s.findings, reference=s.findings) for s in ds.samples]
    inp = references_from_file(records, tmp_path / "mine.jsonl")
    result = score(inp.ids, inp.references, inp.predictions, ["phantom-truth"], n_bootstrap=10, data=inp.dataset)
    entry = result.metrics["phantom-truth"]
    assert entry["status"] == "unavailable" and "came with the predictions file" in entry["reason"]
    result = score(inp.ids, inp.references, inp.predictions, ["phantom-truth"], n_bootstrap=10, data=None)
    assert result.metrics["phantom-truth"]["status"] == "unavailable"


def test_unavailable_without_a_labels_file(ds, tmp_path):
    (tmp_path / "mimic").mkdir()
    data = {"root": str(tmp_path / "mimic"), "name": "x", "fingerprint": "", "split": "test", "unit": "image"}
    result = score(["a"], ["r"], ["p"], ["phantom-truth"], n_bootstrap=10, data=data)
    entry = result.metrics["phantom-truth"]
    assert entry["status"] == "unavailable" and "phantom-labels.csv.gz" in entry["reason"]


def _score_against(ds, root: Path):
    inp = join_references([PredictionRecord(s.id, s.findings) for s in ds.samples], ds)
    return score(inp.ids, inp.references, inp.predictions, ["phantom-truth"], n_bootstrap=10,
                 study_ids=inp.study_ids, data={**inp.dataset, "root": str(root)})


def test_refuses_another_datasets_labels(ds, phantom, tmp_path):
    other = tmp_path / "other"
    generate(other, n_train=10, n_test=12, seed=SEED + 1, image_size=64)
    # The other dataset's labels and manifest: consistent with each other, but not our ids.
    entry = _score_against(ds, other).metrics["phantom-truth"]
    assert entry["status"] == "unavailable"
    assert "refused" in entry["reason"] and "sample ids are not in it" in entry["reason"]
    # Its labels beside our manifest: the ids were not drawn from our seed.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(phantom / MANIFEST, mixed / MANIFEST)
    shutil.copy(other / LABELS_TABLE, mixed / LABELS_TABLE)
    entry = _score_against(ds, mixed).metrics["phantom-truth"]
    assert entry["status"] == "unavailable" and f"not drawn from seed {SEED}" in entry["reason"]
    # Our labels without a manifest cannot be tied to the dataset.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(phantom / LABELS_TABLE, bare / LABELS_TABLE)
    entry = _score_against(ds, bare).metrics["phantom-truth"]
    assert entry["status"] == "unavailable" and "phantom.json is missing" in entry["reason"]


def test_refuses_labels_of_another_split(tmp_path):
    ids = _hand_root(tmp_path / "hand", 3, [{"edema"}], split="train")
    data = {"root": str(tmp_path / "hand"), "name": "hand", "fingerprint": "", "split": "test", "unit": "image"}
    entry = score(ids, ["r"], ["p"], ["phantom-truth"], n_bootstrap=10, data=data).metrics["phantom-truth"]
    assert entry["status"] == "unavailable" and "another split" in entry["reason"]


# -- aggregation ---------------------------------------------------------------------

def test_additive_path_equals_generic_path(ds):
    # Drop the first sentence of every other reference (misses) and claim an effusion in every
    # third (false claims), so that counts of every kind occur.
    texts = []
    for k, s in enumerate(ds.samples):
        parts = re.split(r"(?<=\.)\s+", s.findings.strip())
        text = " ".join(parts[1:] if k % 2 == 0 else parts)
        texts.append(text + (" Small right pleural effusion." if k % 3 == 0 else ""))
    metric = get_metric("phantom-truth")
    assert isinstance(metric, PhantomTruthMetric)
    data = {"root": str(ds.root), "name": ds.name, "fingerprint": ds.fingerprint, "split": ds.split, "unit": ds.unit}
    rows = metric.per_sample_for([s.id for s in ds.samples], [s.findings for s in ds.samples], texts, data)
    clusters = [s.study_id for s in ds.samples]
    fast = bootstrap_distribution(metric, rows, n_resamples=300, seed=4, clusters=clusters)
    generic = bootstrap_distribution(lambda r: metric.aggregate(r), rows, n_resamples=300, seed=4, clusters=clusters)
    assert set(fast) == set(generic) == set(metric.aggregate(rows))
    for k in fast:
        np.testing.assert_allclose(fast[k], generic[k], rtol=1e-12, atol=1e-12)
    assert 0 < metric.aggregate(rows)["phantom_truth_mi"] < 1
