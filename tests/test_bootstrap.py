"""Bootstrap intervals, the paired randomisation test and the shared label F1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import classification_report, f1_score

from bench.errors import BenchError
from bench.metrics.f1 import OBSERVATIONS, TOP5_INDEX, LabelF1Metric, f1_from_counts, label_f1
from bench.stats import Interval, bootstrap, paired_randomization_test
from bench.stats.bootstrap import bootstrap_distribution
from helpers.additive import MeanMetric, mean_of_x

# sklearn warns about the undefined precisions/recalls that the convention scores as 0.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")


class FixedLabels(LabelF1Metric):
    """LabelF1Metric over given rows only (no labeller): for aggregation tests."""

    name = "fixed"
    prefix = "fixed"
    columns = ("fixed_ma5", "fixed_ma14", "fixed_mi5", "fixed_mi14")


def random_labels(rng, n, p_ref=0.3, p_pred=0.3):
    ref = (rng.random((n, 14)) < p_ref).astype(int)
    pred = (rng.random((n, 14)) < p_pred).astype(int)
    return ref, pred


# -- shared F1 against sklearn --------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_label_f1_matches_sklearn_classification_report(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    ref, pred = random_labels(rng, n, p_ref=rng.uniform(0.02, 0.5), p_pred=rng.uniform(0.02, 0.5))
    # Force the awkward classes: no support and no predictions, support but no predictions,
    # predictions but no support.
    ref[:, 0] = 0; pred[:, 0] = 0
    pred[:, 3] = 0; ref[0, 3] = 1
    ref[:, 5] = 0; pred[0, 5] = 1
    got = label_f1(ref, pred)
    cr = classification_report(ref, pred, target_names=list(OBSERVATIONS), output_dict=True, zero_division="warn")
    top = list(TOP5_INDEX)
    cr5 = classification_report(ref[:, top], pred[:, top], output_dict=True)
    assert got["ma14"] == pytest.approx(cr["macro avg"]["f1-score"], abs=1e-12)
    assert got["mi14"] == pytest.approx(cr["micro avg"]["f1-score"], abs=1e-12)
    assert got["ma5"] == pytest.approx(cr5["macro avg"]["f1-score"], abs=1e-12)
    assert got["mi5"] == pytest.approx(cr5["micro avg"]["f1-score"], abs=1e-12)
    assert got["ma14"] == pytest.approx(f1_score(ref, pred, average="macro", zero_division=0), abs=1e-12)
    per_class = f1_from_counts((ref & pred).sum(0), ((1 - ref) & pred).sum(0), (ref & (1 - pred)).sum(0))
    np.testing.assert_allclose(per_class["per_class"], f1_score(ref, pred, average=None, zero_division=0))


def test_label_f1_hand_computed():
    # Cardiomegaly: tp=1, fp=1, fn=0 -> F1 2/3; Edema: tp=0, fp=0, fn=1 -> 0; rest empty -> 0.
    ref = np.zeros((2, 14), int); pred = np.zeros((2, 14), int)
    ref[0, 1] = pred[0, 1] = 1; pred[1, 1] = 1; ref[1, 4] = 1
    got = label_f1(ref, pred)
    assert got["ma14"] == pytest.approx((2 / 3) / 14)
    assert got["ma5"] == pytest.approx((2 / 3) / 5)
    assert got["mi14"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert got["mi5"] == got["mi14"]


# -- bootstrap ------------------------------------------------------------------------

def test_interval_contains_value_and_mean_median():
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"x": rng.normal(0.4, 0.2, size=2000)})
    res = bootstrap(mean_of_x, rows, n_resamples=300, seed=3)
    iv = res["mean_x"]
    assert isinstance(iv, Interval)
    assert iv.value == pytest.approx(rows["x"].mean())
    assert iv.low < iv.value < iv.high
    # Standard error of the mean is 0.2 / sqrt(2000) ~ 0.0045; the 95% interval is ~ +-1.96 se.
    assert iv.median == pytest.approx(iv.value, abs=0.002)
    assert (iv.high - iv.low) == pytest.approx(2 * 1.96 * 0.2 / np.sqrt(2000), rel=0.2)


def test_bootstrap_is_deterministic_per_seed():
    rows = pd.DataFrame({"x": np.random.default_rng(0).random(50)})
    a = bootstrap(mean_of_x, rows, n_resamples=100, seed=7)
    b = bootstrap(mean_of_x, rows, n_resamples=100, seed=7)
    c = bootstrap(mean_of_x, rows, n_resamples=100, seed=8)
    assert a == b
    assert a != c


def test_additive_fast_path_equals_generic_path():
    rows = pd.DataFrame({"x": np.random.default_rng(0).random(60)})
    fast = bootstrap_distribution(MeanMetric(), rows, n_resamples=600, seed=5)  # > one chunk
    slow = bootstrap_distribution(mean_of_x, rows, n_resamples=600, seed=5)
    np.testing.assert_allclose(fast["mean_x"], slow["mean_x"], rtol=1e-12)
    # The two paths sum in different orders (a matrix product vs pandas' mean), so the
    # values agree to rounding, not bit for bit.
    fast_iv = bootstrap(MeanMetric(), rows, n_resamples=50)["mean_x"]
    slow_iv = bootstrap(mean_of_x, rows, n_resamples=50)["mean_x"]
    assert (fast_iv.value, fast_iv.median, fast_iv.low, fast_iv.high) == \
        pytest.approx((slow_iv.value, slow_iv.median, slow_iv.low, slow_iv.high), rel=1e-12)


def test_corpus_metric_reaggregates_repeated_rows():
    """Each resample of micro/macro F1 must equal sklearn on the resampled (repeated) label rows."""
    rng = np.random.default_rng(2)
    ref, pred = random_labels(rng, 30)
    metric = FixedLabels()
    rows = metric.rows_from_binary(ref, pred)
    n_res, seed = 20, 11
    fast = bootstrap_distribution(metric, rows, n_resamples=n_res, seed=seed)
    generic = bootstrap_distribution(lambda r: metric.aggregate(r), rows, n_resamples=n_res, seed=seed)
    idx = np.random.default_rng(seed).integers(0, len(rows), size=(n_res, len(rows)))
    assert len(np.unique(idx[0])) < len(rows)  # the resamples do repeat rows
    for r in range(n_res):
        cr = classification_report(ref[idx[r]], pred[idx[r]], output_dict=True)
        assert fast["fixed_mi14"][r] == pytest.approx(cr["micro avg"]["f1-score"], abs=1e-12)
        assert fast["fixed_ma14"][r] == pytest.approx(cr["macro avg"]["f1-score"], abs=1e-12)
        assert generic["fixed_mi14"][r] == pytest.approx(fast["fixed_mi14"][r], abs=1e-12)
        assert generic["fixed_ma5"][r] == pytest.approx(fast["fixed_ma5"][r], abs=1e-12)


def test_bound_aggregate_method_takes_fast_path_and_percentiles():
    metric = FixedLabels()
    ref, pred = random_labels(np.random.default_rng(4), 80)
    rows = metric.rows_from_binary(ref, pred)
    res = bootstrap(metric.aggregate, rows, n_resamples=200, seed=0)
    dist = bootstrap_distribution(metric, rows, n_resamples=200, seed=0)
    for col in metric.columns:
        lo, med, hi = np.quantile(dist[col], [0.025, 0.5, 0.975])
        assert (res[col].low, res[col].median, res[col].high) == pytest.approx((lo, med, hi))
        assert res[col].value == pytest.approx(metric.aggregate(rows)[col])


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        bootstrap(mean_of_x, pd.DataFrame({"x": []}))
    with pytest.raises(ValueError, match="ci"):
        bootstrap(mean_of_x, pd.DataFrame({"x": [1.0]}), ci=95)


# -- paired randomisation test ---------------------------------------------------------

def test_identical_systems_have_p_one():
    rows = pd.DataFrame({"id": [f"s{i}" for i in range(40)], "x": np.random.default_rng(0).random(40)})
    p = paired_randomization_test(mean_of_x, rows, rows.sample(frac=1, random_state=1), n_permutations=200)
    assert p["mean_x"] == 1.0


def test_clearly_different_systems_have_small_p_both_paths():
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(100)]
    a = pd.DataFrame({"id": ids, "x": rng.normal(0.5, 0.1, 100)})
    b = pd.DataFrame({"id": ids, "x": a["x"] + 0.05 + rng.normal(0, 0.02, 100)})
    p_fast = paired_randomization_test(MeanMetric(), a, b, n_permutations=999, seed=1)
    p_slow = paired_randomization_test(mean_of_x, a, b, n_permutations=999, seed=1)
    assert p_fast["mean_x"] == pytest.approx(1 / 1000)  # no permutation reaches the observed gap
    assert p_slow == p_fast


def test_paired_p_value_matches_exact_enumeration():
    """With 6 samples all 64 swap patterns are equally likely; the Monte Carlo p converges."""
    x_a = np.array([0.9, 0.1, 0.5, 0.7, 0.2, 0.6])
    x_b = np.array([0.4, 0.3, 0.1, 0.6, 0.0, 0.2])
    d = x_a - x_b
    obs = abs(d.mean())
    signs = np.array([[1 - 2 * ((k >> i) & 1) for i in range(6)] for k in range(64)])
    exact = np.mean(np.abs((signs * d).mean(1)) >= obs - 1e-12)
    ids = list("abcdef")
    p = paired_randomization_test(MeanMetric(), pd.DataFrame({"id": ids, "x": x_a}),
                                  pd.DataFrame({"id": ids, "x": x_b}), n_permutations=20000, seed=0)
    assert p["mean_x"] == pytest.approx(exact, abs=0.01)


def test_paired_corpus_metric_paths_agree_and_are_seeded():
    metric = FixedLabels()
    rng = np.random.default_rng(3)
    ref, pa = random_labels(rng, 50)
    _, pb = random_labels(rng, 50)
    ids = [f"s{i}" for i in range(50)]
    a = metric.rows_from_binary(ref, pa).assign(id=ids)
    b = metric.rows_from_binary(ref, pb).assign(id=ids)
    fast = paired_randomization_test(metric, a, b, n_permutations=300, seed=2)
    slow = paired_randomization_test(lambda r: metric.aggregate(r), a, b, n_permutations=300, seed=2)
    assert fast == pytest.approx(slow)
    assert fast == paired_randomization_test(metric, a, b, n_permutations=300, seed=2)
    assert all(1 / 301 <= v <= 1 for v in fast.values())


def test_paired_requires_same_ids():
    a = pd.DataFrame({"id": ["a", "b"], "x": [1.0, 2.0]})
    b = pd.DataFrame({"id": ["a", "c"], "x": [1.0, 2.0]})
    with pytest.raises(BenchError, match="different samples"):
        paired_randomization_test(mean_of_x, a, b)
    with pytest.raises(BenchError, match="duplicate"):
        paired_randomization_test(mean_of_x, pd.DataFrame({"id": ["a", "a"], "x": [1.0, 2.0]}), a)
    with pytest.raises(BenchError, match="no 'id' column"):
        paired_randomization_test(mean_of_x, a.drop(columns="id"), a)


def test_paired_aligns_rows_by_id_not_position():
    # Only sample r differs, so with rows paired by id every swap pattern gives |diff| equal to
    # the observed one and p = 1. Paired by position (B is stored in reverse), the per-sample
    # differences would be (0.4, -0.2, 0.5, -0.4): 2 of the 16 swap patterns shrink the
    # difference below the observed one (exact p = 14/16).
    a = pd.DataFrame({"id": ["p", "q", "r", "s"], "x": [1.0, 0.0, 0.5, 0.6]})
    b = pd.DataFrame({"id": ["s", "r", "q", "p"], "x": [0.6, 0.2, 0.0, 1.0]})
    for fn in (mean_of_x, MeanMetric()):
        assert paired_randomization_test(fn, a, b, n_permutations=200)["mean_x"] == 1.0
    positional = b.assign(id=["p", "q", "r", "s"])
    assert paired_randomization_test(MeanMetric(), a, positional, n_permutations=2000)["mean_x"] == \
        pytest.approx(14 / 16, abs=0.03)
