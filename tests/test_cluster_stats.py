"""Cluster (study-level) resampling: the bootstrap and the paired test with `clusters`.

A MIMIC-CXR study can have several images, each one evaluated row; the rows of a study are
not independent, so the resamplers draw or swap whole studies. The checks here compare
against values known without the resamplers: a one-row-per-study run (duplicating a
study's rows must change nothing), exact enumerations of all bootstrap draws or all swap
patterns, and closed forms for the moments of linear statistics.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from bench.metrics.chexpert_rules import ChexpertRulesMetric
from bench.metrics.nlg import BleuMetric
from bench.stats import bootstrap, paired_randomization_test
from bench.stats.bootstrap import bootstrap_distribution
from helpers.additive import MeanMetric, mean_of_x


def dyadic(rng: np.random.Generator, n: int) -> np.ndarray:
    # Multiples of 1/64: every sum of a few thousand of them is exact in floating point, so
    # a mean over duplicated rows equals the mean over the originals bit for bit and the
    # checks below can be exact instead of approximate.
    return rng.integers(0, 65, size=n) / 64


def label_rows(rng: np.random.Generator, n: int, p_pred: float = 0.3) -> pd.DataFrame:
    ref = (rng.random((n, 14)) < 0.3).astype(int)
    pred = (rng.random((n, 14)) < p_pred).astype(int)
    return ChexpertRulesMetric().rows_from_binary(ref, pred)


def duplicate(studies: pd.DataFrame, copies: int) -> tuple[pd.DataFrame, list[str]]:
    """Every study's row `copies` times, as image rows, and their study ids.

    The copies are interleaved (all first images, then all second images, ...), so a
    study's rows are not contiguous; first appearance still follows the study order.
    """
    images = pd.concat([studies] * copies, ignore_index=True)
    return images, [f"s{i}" for i in range(len(studies))] * copies


# -- the unit of resampling is the study ---------------------------------------------------

def test_singleton_clusters_reproduce_row_resampling_exactly():
    rows = label_rows(np.random.default_rng(0), 50)
    metric = ChexpertRulesMetric()
    ids = list(range(len(rows)))
    for fn in (metric, lambda r: metric.aggregate(r)):
        plain = bootstrap_distribution(fn, rows, n_resamples=300, seed=3)
        clustered = bootstrap_distribution(fn, rows, n_resamples=300, seed=3, clusters=ids)
        for col in metric.columns:
            np.testing.assert_array_equal(clustered[col], plain[col])
    a = rows.assign(id=ids)
    b = label_rows(np.random.default_rng(1), 50).assign(id=ids)
    assert paired_randomization_test(metric, a, b, n_permutations=300, clusters=ids) == \
        paired_randomization_test(metric, a, b, n_permutations=300)


def test_image_rows_see_the_same_study_draws_as_study_rows():
    """Cluster order is order of first appearance: an image-level run whose images are
    grouped by study draws the same studies as the study-level run in that order."""
    rng = np.random.default_rng(5)
    n_studies = 30
    study_x = rng.integers(0, 1000, size=n_studies)
    # Split each study's integer total over 1-4 images (integer parts: sums are exact),
    # and shuffle the images so that studies first appear in a scrambled order.
    image_x, image_study = [], []
    for s, x in enumerate(study_x):
        k = int(rng.integers(1, 5))
        cuts = np.sort(rng.integers(0, x + 1, size=k - 1))
        parts = np.diff(np.concatenate([[0], cuts, [x]]))
        image_x += parts.tolist()
        image_study += [f"s{s}"] * k
    perm = rng.permutation(len(image_x))
    images = pd.DataFrame({"x": np.asarray(image_x, float)[perm]})
    clusters = [image_study[i] for i in perm]
    first_seen = list(dict.fromkeys(clusters))
    studies = pd.DataFrame({"x": [float(study_x[int(s[1:])]) for s in first_seen]})

    def total(rows):
        return {"total": float(rows["x"].sum())}

    image_level = bootstrap_distribution(total, images, n_resamples=300, seed=9, clusters=clusters)
    study_level = bootstrap_distribution(total, studies, n_resamples=300, seed=9)
    np.testing.assert_array_equal(image_level["total"], study_level["total"])
    # Another study order draws other multisets: the order really is first appearance.
    other = bootstrap_distribution(total, studies.iloc[::-1].reset_index(drop=True), n_resamples=300, seed=9)
    assert not np.array_equal(other["total"], study_level["total"])


# The metric paths: an additive metric takes counts @ per-cluster statistics; a plain
# callable re-aggregates the expanded rows of every resample.
RULES = ChexpertRulesMetric()
PATHS = {
    "mean-additive": (MeanMetric(), "x"),
    "mean-generic": (mean_of_x, "x"),
    "micro-f1-additive": (RULES, "labels"),
    "micro-f1-generic": (lambda r: RULES.aggregate(r), "labels"),
}


@pytest.mark.parametrize("copies", [2, 3])
@pytest.mark.parametrize("path", list(PATHS))
def test_duplicated_images_equal_the_study_level_bootstrap(path, copies):
    fn, kind = PATHS[path]
    rng = np.random.default_rng(11)
    studies = pd.DataFrame({"x": dyadic(rng, 40)}) if kind == "x" else label_rows(rng, 40)
    images, clusters = duplicate(studies, copies)
    # 300 resamples span two chunks of draws.
    by_study = bootstrap(fn, studies, n_resamples=300, seed=4)
    by_image = bootstrap(fn, images, n_resamples=300, seed=4, clusters=clusters)
    assert by_image == by_study  # value, median, low and high, exactly
    if kind == "labels":
        assert {"rules_mi14", "rules_ma14"} <= set(by_image)


def test_duplicated_images_equal_the_study_level_bootstrap_bleu():
    rng = np.random.default_rng(2)
    words = "no acute cardiopulmonary process small left pleural effusion mild edema heart size normal".split()
    refs = [" ".join(rng.choice(words, size=int(rng.integers(6, 14)))) for _ in range(25)]
    # Predictions are references with some words replaced, so that BLEU-4 has real 4-gram
    # matches and is not just the smoothing constants.
    preds = [" ".join(w if rng.random() < 0.8 else str(rng.choice(words)) for w in r.split()) for r in refs]
    metric = BleuMetric()
    studies = metric.per_sample(refs, preds)
    images, clusters = duplicate(studies, 2)
    by_study = bootstrap(metric, studies, n_resamples=100, seed=1)
    by_image = bootstrap(metric, images, n_resamples=100, seed=1, clusters=clusters)
    # Not bit-exact: pycocoevalcap's BLEU smooths every precision as (correct + 1e-15) /
    # (guess + 1e-9), so BLEU of a corpus with every count doubled differs from BLEU of the
    # corpus itself by about 1e-9 / guess relatively. The draws are the same, so the values
    # agree to that order.
    for col, iv in by_study.items():
        got = by_image[col]
        assert (got.value, got.median, got.low, got.high) == \
            pytest.approx((iv.value, iv.median, iv.low, iv.high), rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("path", list(PATHS))
def test_duplicated_images_give_the_study_level_p_value(path):
    fn, kind = PATHS[path]
    rng = np.random.default_rng(12)
    n = 40
    if kind == "x":
        a = pd.DataFrame({"x": dyadic(rng, n)})
        b = pd.DataFrame({"x": np.clip(a["x"] + rng.integers(-8, 10, size=n) / 64, 0, 1)})
    else:
        a, b = label_rows(rng, n), label_rows(rng, n, p_pred=0.35)
        b[RULES.ref_columns()] = a[RULES.ref_columns()].to_numpy()  # same references
    ids = [f"s{i}" for i in range(n)]
    study_a, study_b = a.assign(id=ids), b.assign(id=ids)
    # Few permutations: the generic label path costs two pandas aggregations per permutation.
    p_study = paired_randomization_test(fn, study_a, study_b, n_permutations=120, seed=6)

    img_a, _ = duplicate(a, 2)
    img_b, _ = duplicate(b, 2)
    image_ids = [f"s{i}_v{j}" for j in range(2) for i in range(n)]
    img_a, img_b = img_a.assign(id=image_ids), img_b.assign(id=image_ids)
    study_of = {f"s{i}_v{j}": f"s{i}" for i in range(n) for j in range(2)}
    # B stored in another order: rows are aligned by id first, then swapped by study.
    shuffled_b = img_b.sample(frac=1, random_state=3)
    p_mapping = paired_randomization_test(fn, img_a, shuffled_b, n_permutations=120, seed=6, clusters=study_of)
    p_sequence = paired_randomization_test(fn, img_a, shuffled_b, n_permutations=120, seed=6,
                                           clusters=[study_of[i] for i in image_ids])
    assert p_mapping == p_study
    assert p_sequence == p_study
    # Mid-range p-values, not the floor 1/121 or 1, so that equality is informative.
    assert any(2 / 121 < v < 1 for v in p_study.values())


def test_duplicated_rows_resampled_as_independent_give_too_narrow_intervals():
    """The fault the clusters fix: copies of a study counted as independent samples make the
    interval about 1/sqrt(copies) as wide as the study-level one."""
    rng = np.random.default_rng(7)
    studies = pd.DataFrame({"x": dyadic(rng, 150)}).join(label_rows(rng, 150))
    images, clusters = duplicate(studies, 2)
    for fn, col in ((MeanMetric(), "mean_x"), (RULES, "rules_mi14")):
        naive = bootstrap(fn, images, n_resamples=1000, seed=0)[col]
        right = bootstrap(fn, images, n_resamples=1000, seed=0, clusters=clusters)[col]
        ratio = (naive.high - naive.low) / (right.high - right.low)
        # Expected 1/sqrt(2) = 0.71; with 1000 resamples a percentile width is good to a few %.
        assert 0.6 < ratio < 0.8, ratio
        assert naive.value == right.value


# -- exact bootstrap distributions of a hand-built clustered sample ------------------------

# Five studies of unequal size whose images are alike within a study (as real ones are).
CLUSTER_VALUES: list[list[float]] = [
    [0.0],
    [0.75, 0.875, 1.0],
    [0.25, 0.125],
    [0.5, 0.625, 0.5, 0.375],
    [1.0],
]


def clustered_rows() -> tuple[pd.DataFrame, list[str]]:
    """The images in a scrambled order, and their study ids."""
    flat = [(f"c{c}", x) for c, xs in enumerate(CLUSTER_VALUES) for x in xs]
    order = np.random.default_rng(0).permutation(len(flat))
    return pd.DataFrame({"x": [flat[i][1] for i in order]}), [flat[i][0] for i in order]


def exact_ratio_distribution() -> tuple[np.ndarray, np.ndarray]:
    """Sorted values and probabilities of the row mean over all K^K ordered study draws.

    Written from the definition alone: every ordered draw of K studies with replacement
    has probability K^-K, and the resample holds every image of every drawn study.
    """
    k = len(CLUSTER_VALUES)
    sums = [sum(xs) for xs in CLUSTER_VALUES]
    sizes = [len(xs) for xs in CLUSTER_VALUES]
    values = np.array([sum(sums[c] for c in draw) / sum(sizes[c] for c in draw)
                       for draw in itertools.product(range(k), repeat=k)])
    values.sort()
    return values, np.full(len(values), 1 / len(values))


def exact_quantile(values: np.ndarray, probs: np.ndarray, p: float) -> float:
    """The smallest value v with P(X <= v) >= p."""
    cdf = np.cumsum(probs)
    return float(values[min(np.searchsorted(cdf, p - 1e-12), len(values) - 1)])


def test_percentile_interval_matches_the_exact_bootstrap_distribution():
    rows, clusters = clustered_rows()
    values, probs = exact_ratio_distribution()
    n_res = 40_000
    dist = bootstrap_distribution(MeanMetric(), rows, n_resamples=n_res, seed=0, clusters=clusters)["mean_x"]
    iv = bootstrap(MeanMetric(), rows, n_resamples=n_res, seed=0, clusters=clusters)["mean_x"]
    assert iv.value == pytest.approx(rows["x"].mean())
    for p, got in ((0.025, iv.low), (0.5, iv.median), (0.975, iv.high)):
        # The empirical p-quantile of n_res draws lies between the exact (p - d)- and
        # (p + d)-quantiles unless the share of draws below it is off by more than d; with
        # d = 5 binomial standard errors, sqrt(p(1-p)/n_res), that has probability < 1e-6.
        d = 5 * math.sqrt(p * (1 - p) / n_res)
        assert exact_quantile(values, probs, p - d) <= got <= exact_quantile(values, probs, p + d), p
    exact_mean = float(values @ probs)
    exact_sd = math.sqrt(float(((values - exact_mean) ** 2) @ probs))
    assert dist.mean() == pytest.approx(exact_mean, abs=5 * exact_sd / math.sqrt(n_res))
    # The same draws through the generic path (a plain callable) give the same values.
    generic = bootstrap_distribution(mean_of_x, rows, n_resamples=300, seed=0, clusters=clusters)["mean_x"]
    fast = bootstrap_distribution(MeanMetric(), rows, n_resamples=300, seed=0, clusters=clusters)["mean_x"]
    np.testing.assert_allclose(generic, fast, rtol=1e-12)
    # Resampling the images as independent rows gets this distribution wrong: its interval
    # is far narrower than the exact one.
    naive = bootstrap(MeanMetric(), rows, n_resamples=n_res, seed=0)["mean_x"]
    exact_width = exact_quantile(values, probs, 0.975) - exact_quantile(values, probs, 0.025)
    assert naive.high - naive.low < 0.75 * exact_width


class ClusterMoments:
    """Additive: the cluster mean of study totals, sum(x) / K, and the number of rows drawn."""

    def __init__(self, n_clusters: int):
        self.k = n_clusters

    def sufficient_statistics(self, rows):
        return np.stack([rows["x"].to_numpy(float), np.ones(len(rows))], axis=1)

    def aggregate_totals(self, totals):
        return {"cluster_mean": totals[..., 0] / self.k, "n_rows": totals[..., 1]}

    def aggregate(self, rows):
        return {"cluster_mean": float(rows["x"].sum()) / self.k, "n_rows": float(len(rows))}


def test_bootstrap_moments_of_linear_statistics_match_the_closed_form():
    """With study totals X_c and sizes n_c, a resample draws counts w ~ Multinomial(K, 1/K):
    E[sum w_c X_c / K] = mean(X) and Var = var(X) / K (population variance); the number of
    rows drawn, sum w_c n_c, has mean N and variance K var(n). Row resampling would always
    draw exactly N rows."""
    rows, clusters = clustered_rows()
    k = len(CLUSTER_VALUES)
    totals = np.array([sum(xs) for xs in CLUSTER_VALUES])
    sizes = np.array([len(xs) for xs in CLUSTER_VALUES], float)
    closed = {"cluster_mean": (totals.mean(), totals.var() / k), "n_rows": (sizes.sum(), k * sizes.var())}
    # The closed forms against the exact enumeration of all K^K draws.
    draws = np.array(list(itertools.product(range(k), repeat=k)))
    exact = {"cluster_mean": totals[draws].sum(1) / k, "n_rows": sizes[draws].sum(1)}
    for col, (mean, var) in closed.items():
        assert exact[col].mean() == pytest.approx(mean, abs=1e-12)
        assert exact[col].var() == pytest.approx(var, abs=1e-12)

    n_res = 40_000
    dist = bootstrap_distribution(ClusterMoments(k), rows, n_resamples=n_res, seed=1, clusters=clusters)
    for col, (mean, var) in closed.items():
        # Means within 5 standard errors; sample variances within 5 of their relative standard
        # errors (sqrt(2 / n_res) for a near-normal statistic, ~0.7%), so within 5%.
        assert dist[col].mean() == pytest.approx(mean, abs=5 * math.sqrt(var / n_res)), col
        assert dist[col].var() == pytest.approx(var, rel=0.05), col
    assert np.all(bootstrap_distribution(ClusterMoments(k), rows, n_resamples=50, seed=1)["n_rows"] == len(rows))


# -- exact paired test with studies swapped together ---------------------------------------

# Per-image A - B differences by study; A = B + d, with B arbitrary.
PAIRED_DIFFS: list[list[float]] = [[0.5], [0.25, 0.25, 0.125], [-0.125, -0.0625], [0.375, 0.25]]


def exact_p(groups: list[list[float]]) -> float:
    """Share of the 2^len(groups) swap patterns (each group swapped as one) whose |mean diff|
    reaches the observed one: the exact randomisation p-value."""
    n = sum(len(g) for g in groups)
    sums = [sum(g) for g in groups]
    obs = abs(sum(sums)) / n
    hits = sum(abs(sum(s * g for s, g in zip(signs, sums))) / n >= obs - 1e-12
               for signs in itertools.product((1, -1), repeat=len(groups)))
    return hits / 2 ** len(groups)


def paired_rows() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    rng = np.random.default_rng(4)
    ids, study_of, d = [], {}, []
    for s, diffs in enumerate(PAIRED_DIFFS):
        for v, diff in enumerate(diffs):
            ids.append(f"s{s}_v{v}")
            study_of[ids[-1]] = f"s{s}"
            d.append(diff)
    b = dyadic(rng, len(ids))
    rows_a = pd.DataFrame({"id": ids, "x": b + np.asarray(d)})
    rows_b = pd.DataFrame({"id": ids, "x": b}).iloc[::-1]  # stored in another order
    return rows_a, rows_b, study_of


def test_paired_study_swaps_match_exact_enumeration():
    rows_a, rows_b, study_of = paired_rows()
    p_study = exact_p(PAIRED_DIFFS)  # 16 patterns
    p_image = exact_p([[d] for g in PAIRED_DIFFS for d in g])  # 256 patterns, images independent
    assert (p_study, p_image) == (4 / 16, 12 / 256)  # the two nulls differ a lot here
    n_perm = 20_000
    got = paired_randomization_test(MeanMetric(), rows_a, rows_b, n_permutations=n_perm, seed=0,
                                    clusters=study_of)["mean_x"]
    # (hits + 1) / (n + 1) with hits ~ Binomial(n, p): standard error sqrt(p(1-p)/n) = 0.003;
    # 0.015 is 5 of them.
    assert got == pytest.approx(p_study, abs=0.015)
    naive = paired_randomization_test(MeanMetric(), rows_a, rows_b, n_permutations=n_perm, seed=0)["mean_x"]
    assert naive == pytest.approx(p_image, abs=0.015)
    # The generic path flips the same coins; a sequence of study ids (in A's row order)
    # is the same as the mapping.
    fast = paired_randomization_test(MeanMetric(), rows_a, rows_b, n_permutations=500, seed=2, clusters=study_of)
    slow = paired_randomization_test(mean_of_x, rows_a, rows_b, n_permutations=500, seed=2,
                                     clusters=[study_of[i] for i in rows_a["id"]])
    assert fast == slow


# -- bad input -----------------------------------------------------------------------------

def test_bootstrap_rejects_bad_clusters_and_empty_rows():
    rows = pd.DataFrame({"x": [0.1, 0.2, 0.3, 0.4]})
    for fn in (bootstrap, bootstrap_distribution):
        with pytest.raises(ValueError, match="clusters has 3 ids but there are 4 rows"):
            fn(MeanMetric(), rows, clusters=["a", "a", "b"])
        with pytest.raises(ValueError, match="clusters has 5 ids"):
            fn(mean_of_x, rows, clusters=["a", "a", "b", "b", "c"])
        with pytest.raises(ValueError, match="missing"):
            fn(MeanMetric(), rows, clusters=["a", None, "b", "b"])
        with pytest.raises(ValueError, match="sequence of cluster"):
            fn(MeanMetric(), rows, clusters="abcd")
        with pytest.raises(ValueError, match="empty"):
            fn(MeanMetric(), rows.iloc[:0], clusters=[])
    # The empty-rows error comes before the metric's own aggregate sees the empty frame.
    with pytest.raises(ValueError, match="empty"):
        bootstrap(BleuMetric(), BleuMetric().per_sample([], []))


def test_paired_rejects_bad_clusters():
    a = pd.DataFrame({"id": ["p", "q", "r"], "x": [0.1, 0.2, 0.3]})
    b = pd.DataFrame({"id": ["r", "q", "p"], "x": [0.3, 0.1, 0.0]})
    with pytest.raises(ValueError, match="clusters has 2 ids but there are 3 samples"):
        paired_randomization_test(MeanMetric(), a, b, clusters=["s1", "s1"])
    with pytest.raises(ValueError, match="no cluster .study. id for 1 sample ids.*'r'"):
        paired_randomization_test(MeanMetric(), a, b, clusters={"p": "s1", "q": "s1"})
    with pytest.raises(ValueError, match="empty"):
        paired_randomization_test(MeanMetric(), a.iloc[:0], b.iloc[:0], clusters={})
