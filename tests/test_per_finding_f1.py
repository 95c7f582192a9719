"""Per-finding F1 of the CheXpert-observation metrics: values against sklearn, and the second table
that the leaderboard prints after the main one (md, csv, html) from real scored runs."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from sklearn.metrics import f1_score

from bench.metrics.chexbert import CheXbertMetric
from bench.metrics.chexpert_rules import ChexpertRulesMetric
from bench.metrics.f1 import OBSERVATIONS
from bench.stages.leaderboard import load_boards, render


def test_per_finding_f1_equals_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    ref = (rng.random((300, 14)) < 0.3).astype(np.int8)
    pred = np.where(rng.random((300, 14)) < 0.8, ref, 1 - ref).astype(np.int8)
    pred[:, 3] = 0  # a finding never predicted: sklearn's zero_division gives 0
    ref[:, 10] = 0
    pred[:, 10] = 0  # never present, never predicted: 0 as well (every class counts in Ma-14)
    m = CheXbertMetric()
    agg = m.aggregate(m.rows_from_binary(ref, pred))
    expected = f1_score(ref, pred, average=None, zero_division=0)
    got = np.array([agg[k] for k in m.finding_columns()])
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert agg["chexbert_ma14"] == pytest.approx(expected.mean())


def test_detail_table_is_declared_in_metadata_with_the_14_observations():
    for cls in (CheXbertMetric, ChexpertRulesMetric):
        details = cls.metadata()["details"]
        assert [c["header"] for c in details["columns"]] == list(OBSERVATIONS)
        assert cls.name in details["title"]
        assert all(c["key"] not in cls.columns for c in details["columns"])  # not leaderboard columns


def test_bootstrap_gives_per_finding_intervals_by_the_fast_path():
    from bench.stats.bootstrap import bootstrap_distribution

    rng = np.random.default_rng(1)
    ref = (rng.random((80, 14)) < 0.4).astype(np.int8)
    pred = (rng.random((80, 14)) < 0.4).astype(np.int8)
    m = ChexpertRulesMetric()
    rows = m.rows_from_binary(ref, pred)
    fast = bootstrap_distribution(m, rows, n_resamples=40, seed=2)
    slow = bootstrap_distribution(lambda r: m.aggregate(r), rows, n_resamples=40, seed=2)
    key = m.finding_columns()[9]
    np.testing.assert_allclose(fast[key], slow[key], atol=1e-12)


REPORTS = ["Mild cardiomegaly. Small left pleural effusion.", "No acute cardiopulmonary process.",
           "Right lower lobe consolidation concerning for pneumonia.", "Moderate pulmonary edema.",
           "Endotracheal tube in place. No pneumothorax.", "Left basilar atelectasis."]


@pytest.fixture
def scored_runs(tmp_path):
    from bench.stages.score import references_from_file, score, write_scores
    from bench.predictions import PredictionRecord

    preds = {"good": REPORTS, "shifted": REPORTS[1:] + REPORTS[:1]}
    for run, texts in preds.items():
        records = [PredictionRecord(id=f"s{i}", prediction=p, reference=r) for i, (p, r) in
                   enumerate(zip(texts, REPORTS))]
        inp = references_from_file(records, tmp_path / f"{run}.jsonl")
        result = score(inp.ids, inp.references, inp.predictions, ["chexpert-rules"], n_bootstrap=20)
        write_scores(tmp_path / run, run, "file", inp, result)
    return tmp_path


def test_leaderboard_prints_the_per_finding_table_after_the_main_one(scored_runs):
    boards = load_boards(scored_runs)
    assert len(boards) == 1 and len(boards[0].details) == 1
    text = render(boards, "md")
    main, detail = text.split("chexpert-rules: F1 per observation", 1)
    assert "Mi-14 (rules)" in main and "| Cardiomegaly |" not in main
    assert "| run | " + " | ".join(OBSERVATIONS) + " |" in detail
    good = next(line for line in detail.splitlines() if line.startswith("| good |")).split(" | ")
    # Identical reports: a finding they mention scores 100; one none of them mentions, 0 (sklearn's convention).
    assert good[1 + OBSERVATIONS.index("Cardiomegaly")].startswith("100.0")
    assert good[1 + OBSERVATIONS.index("Fracture")].startswith("0.0")
    rows = list(csv.reader(io.StringIO(render(boards, "csv"))))
    header = next(r for r in rows if "Cardiomegaly" in r)
    good = next(r for r in rows[rows.index(header):] if r[4] == "good")
    assert good[header.index("Cardiomegaly")] == "100.00"
    assert "<caption>chexpert-rules: F1 per observation" in render(boards, "html")
