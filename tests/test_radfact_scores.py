"""RadFact scoring: hand-computed precision, recall and F1, NaN cases, repeats, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from radfact.scores import StudyScore, aggregate, aggregate_totals, f1, sufficient_statistics

# Four studies, worked by hand:
#   A: 2 of 3 candidate phrases entailed, 1 of 2 reference phrases -> P 2/3, R 1/2
#   B: no candidate phrases (P NaN), 1 of 4 reference phrases      -> R 1/4
#   C: invalid (evidence could not be matched): dropped, 1 LLM failure counted
#   D: 1 of 1 candidate, no reference phrases (R NaN), 2 rewrites  -> P 1
# P = (2/3 + 1)/2 = 5/6; R = (1/2 + 1/4)/2 = 3/8; F1 = 2PR/(P+R) = (5/8)/(29/24) = 15/29.
A = StudyScore(2, 3, 1, 2)
B = StudyScore(0, 0, 1, 4)
C = StudyScore(1, 2, 1, 2, llm_failures=1, invalid=True)
D = StudyScore(1, 1, 0, 0, phrase_rewrites=2)


def test_hand_computed_corpus_values():
    out = aggregate([A, B, C, D])
    assert out["radfact_precision"] == pytest.approx(5 / 6)
    assert out["radfact_recall"] == pytest.approx(3 / 8)
    assert out["radfact_f1"] == pytest.approx(15 / 29)
    assert out["radfact_llm_failures"] == 1
    assert out["radfact_phrase_rewrites"] == 2
    assert out["radfact_invalid_studies"] == 1


def test_per_study_values_and_nan_cases():
    assert A.precision == pytest.approx(2 / 3) and A.recall == 0.5
    assert math.isnan(B.precision) and B.recall == 0.25
    assert math.isnan(C.precision) and math.isnan(C.recall)  # invalid: dropped from both means
    assert D.precision == 1.0 and math.isnan(D.recall)
    row = B.row()
    assert row["radfact_precision_valid"] is False and row["radfact_recall_valid"] is True


def test_f1_of_means_not_mean_of_f1s():
    # Study 1: P 1, R 0; study 2: P 0, R 1. Per-study F1s are 0, but the means are 1/2 each.
    out = aggregate([StudyScore(1, 1, 0, 1), StudyScore(0, 1, 1, 1)])
    assert out["radfact_f1"] == pytest.approx(0.5)


def test_zero_precision_and_recall_give_zero_f1():
    out = aggregate([StudyScore(0, 2, 0, 3)])
    assert out["radfact_precision"] == 0 and out["radfact_recall"] == 0 and out["radfact_f1"] == 0
    assert f1(0.0, 0.0) == 0


def test_all_nan_gives_nan_not_a_crash():
    out = aggregate([StudyScore(0, 0, 0, 0), C])
    assert math.isnan(out["radfact_precision"]) and math.isnan(out["radfact_f1"])
    assert out["radfact_invalid_studies"] == 1


def test_any_multiset_of_rows_aggregates_like_the_studies_it_holds():
    rows = [A.row(), A.row(), B.row()]
    out = {k: float(v) for k, v in aggregate_totals(sufficient_statistics(rows).sum(0)).items()}
    assert out["radfact_precision"] == pytest.approx(2 / 3)  # (2/3 + 2/3) / 2
    assert out["radfact_recall"] == pytest.approx(5 / 12)  # (1/2 + 1/2 + 1/4) / 3


def test_vectorised_totals_match_one_at_a_time():
    rng = np.random.default_rng(0)
    scores = [StudyScore(int(e), int(n), int(f), int(m)) for n, m in rng.integers(0, 5, (30, 2))
              for e, f in [(rng.integers(0, n + 1), rng.integers(0, m + 1))]]
    stats = sufficient_statistics([s.row() for s in scores])
    weights = rng.integers(0, 3, (7, len(scores)))
    batch = aggregate_totals(weights @ stats)
    for w, p in zip(weights, batch["radfact_precision"]):
        picked = [s for s, k in zip(scores, w) for _ in range(k)]
        expected = aggregate(picked)["radfact_precision"] if picked else math.nan
        assert (math.isnan(p) and math.isnan(expected)) or p == pytest.approx(expected)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="entailed counts"):
        StudyScore(3, 2, 0, 0)


def test_rows_work_from_a_dataframe():
    df = pd.DataFrame([A.row(), D.row()])
    stats = sufficient_statistics(df.to_dict("records"))
    assert aggregate_totals(stats.sum(0))["radfact_precision"] == pytest.approx((2 / 3 + 1) / 2)
