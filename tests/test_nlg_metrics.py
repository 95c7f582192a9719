"""Tests of bench.metrics.nlg against pinned pycocoevalcap 1.2 values and hand-computed cases.

The pinned numbers below were produced once (2025, pycocoevalcap 1.2, OpenJDK 17) by running
pycocoevalcap's own pipeline on PAIRS: `PTBTokenizer().tokenize` on references and predictions,
then `Bleu(4).compute_score`, `Rouge().compute_score` and `Meteor().compute_score` on the
tokenised texts (ids 0..10 in PAIRS order). The tokeniser pins are PTBTokenizer's output for
each input line.
"""

from __future__ import annotations

import random
import shutil

import pandas as pd
import pytest

from bench.errors import BenchError, MetricUnavailable
from bench.metrics.nlg import BleuMetric, MeteorMetric, RougeMetric
from bench.metrics.nlg.bleu import bleu_from_counts, bleu_stats
from bench.metrics.nlg.meteor import (METEOR_STAT_FIELDS, java_available, meteor_from_stats, sanitise_for_meteor,
                                      sum_meteor_stats)
from bench.metrics.nlg.rouge import lcs_length, rouge_l
from bench.metrics.nlg.text import normalise_text
from bench.metrics.registry import get_metric

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs a Java runtime")

PAIRS = [
    ("There is a 5.2 cm right-sided pleural effusion. No pneumothorax. Heart size is normal.",
     "Small right pleural effusion. No pneumothorax. The heart is normal in size."),
    ("The ET tube terminates 3.5 cm above the carina (previously 4 cm). NG tube in the stomach.",
     "Endotracheal tube tip is 3 cm above the carina. Enteric tube courses below the diaphragm."),
    ("Lungs are clear w/o focal consolidation; no effusion/pneumothorax. Cardiomediastinal silhouette is normal.",
     "The lungs are clear. No pleural effusion or pneumothorax. Normal cardiomediastinal silhouette."),
    ("Mild pulmonary edema vs. atypical infection, e.g. perihilar haziness. Compared to ___, unchanged.",
     "Mild pulmonary vascular congestion. No focal consolidation. Unchanged from prior."),
    ("Patient's right IJ line tip at the cavoatrial junction/upper SVC. Left PICC ends in the mid-SVC.",
     "Right internal jugular central line ends in the upper SVC. No pneumothorax."),
    ("Stable 8-mm nodule at the left apex [see CT from ___]. Old healed left 5th-7th rib fractures.",
     "Left apical nodule is unchanged. Healed left rib fractures."),
    ("Low lung volumes ... crowding of bronchovascular markings. Bibasilar atelectasis; no consolidation.",
     "Lung volumes are low with bibasilar atelectasis. No consolidation, effusion, or pneumothorax."),
    ("\"Clear\" lungs per prior; can't exclude early pneumonia in the RLL. Dr. ___ was paged at 10:30 a.m.",
     "Possible early right lower lobe pneumonia. Findings were discussed with Dr. ___ at 10:30."),
    ("Moderate cardiomegaly. Multifocal opacities (R>L) concerning for pneumonia, ~50% larger than on 1/2/2150.",
     "Severe cardiomegaly. Bilateral opacities, worse on the right, may reflect pneumonia or edema."),
    ("No acute cardiopulmonary process.", "No acute cardiopulmonary process."),
    ("Sternotomy wires and mediastinal clips are intact. s/p CABG.", "Degenerative changes of the thoracic spine."),
]
REFS = [r for r, _ in PAIRS]
PREDS = [p for _, p in PAIRS]

# pycocoevalcap 1.2 on PAIRS (see module docstring).
PINNED_BLEU_CORPUS = [0.3571480589133608, 0.24115791540390838, 0.16378200747864965, 0.11061953867721198]
PINNED_BLEU4_PER_SAMPLE = [
    0.22932873191654646, 0.14493206744393258, 3.646285861281333e-05, 3.6591847297717275e-09,
    2.089946491747014e-05, 2.612765545287189e-09, 0.2620251006920833, 3.307720535643422e-09,
    4.37967687158356e-13, 0.9999999992291674, 1.392442061937298e-16,
]
PINNED_ROUGE_CORPUS = 0.40184891605513684
PINNED_ROUGE_PER_SAMPLE = [
    0.5310945273631842, 0.4032105760151086, 0.5, 0.25487465181058494, 0.3344298245614035,
    0.3355335533553355, 0.5258620689655172, 0.35396518375241776, 0.18136769078295345, 1.0, 0.0,
]
PINNED_METEOR_CORPUS = 0.18687828172433074
PINNED_METEOR_PER_SAMPLE = [
    0.31606964363403955, 0.17868589118568237, 0.27283765012039557, 0.09939721330033796,
    0.1646822946977762, 0.14033568160553825, 0.3250267580512009, 0.23374023298093588,
    0.08566243194192377, 1.0, 0.0,
]

# PTBTokenizer (CoreNLP 3.4.1 via pycocoevalcap) output after its punctuation removal.
PINNED_TOKENISATION = [
    ("There is a 5.2 cm right-sided pleural effusion.", "there is a 5.2 cm right-sided pleural effusion"),
    ("The patient's ET tube terminates 3.5 cm above the carina (previously 4 cm).",
     "the patient 's et tube terminates 3.5 cm above the carina -lrb- previously 4 cm -rrb-"),
    ("Dr. ___ was notified at 10:30 a.m. on ___.", "dr. ___ was notified at 10:30 a.m. on ___"),
    ("Mild pulmonary edema vs. atelectasis, e.g. at the left base, i.e. unchanged.",
     "mild pulmonary edema vs. atelectasis e.g. at the left base i.e. unchanged"),
    ("Lungs are clear w/o focal consolidation; no effusion/pneumothorax.",
     "lungs are clear w/o focal consolidation no effusion/pneumothorax"),
    ('"Clear" lungs, can\'t exclude pneumonia.', "clear lungs ca n't exclude pneumonia"),
    ("Opacity is 2x3 cm, ~1/2 of the lung, 50% smaller; T11-T12 level.",
     "opacity is 2x3 cm ~ 1/2 of the lung 50 % smaller t11-t12 level"),
    ("Comparison: CXR 1/2/2150... unchanged!", "comparison cxr 1/2/2150 unchanged"),
    ("Bibasilar opacities [likely atelectasis] {see prior} & interval improvement",
     "bibasilar opacities -lsb- likely atelectasis -rsb- -lcb- see prior -rcb- & interval improvement"),
    ("Mild cardiomegaly.No pleural effusion.", "mild cardiomegaly.no pleural effusion"),
    ("Heart size is top-normal, 1.5cm nodule.", "heart size is top-normal 1.5 cm nodule"),
    ("The ___-year-old patient with ___ ___ tube.", "the ___ year-old patient with ___ ___ tube"),
    ("ET tube 2 cm above carina, approx. 1 cm higher.", "et tube 2 cm above carina approx 1 cm higher"),
    ("Stable etc. Unchanged etc.", "stable etc. unchanged etc."),
    ("A.P. and P.A. views. No. 5 pt.", "a.p. and p.a. views no. 5 pt"),
    ("a/b/c/d w/ and/or +/- 2 x 3 x 4 cm >5 mm <1 cm", "a/b/c / d w / and/or + / 2 x 3 x 4 cm > 5 mm < 1 cm"),
    ("3 1/2 cm and 1,000 ml and .5 cm", "3\xa01/2 cm and 1,000 ml and .5 cm"),
    ("Patient\u2019s ET tube \u2013 unchanged \u2013 38.5\u00b0C, \u00b1 1 mm.", "patient 's et tube unchanged 38.5 \u00b0 c \u00b1 1 mm"),
    ("T4/T5 C7-T1 L1/2 2.5x3.0 cm 2.5-3.0 cm", "t4/t5 c7-t1 l1/2 2.5 x3 .0 cm 2.5-3 .0 cm"),
    ("Size:5 cm; level=T7; 5cm\u00d73cm; 100%.", "size :5 cm level = t7 5cm \u00d7 3cm 100 %"),
    ("Heart:normal.Lungs:clear.", "heart normal.lungs clear"),
    ("a - b a -- b a --- b", "a b a b a b"),
]


# ------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(("text", "expected"), PINNED_TOKENISATION)
def test_tokenisation_matches_ptbtokenizer(text, expected):
    assert normalise_text(text) == expected


def test_pairs_tokenise_like_ptbtokenizer():
    # Two of pycocoevalcap's tokenised texts from the pinned run.
    assert normalise_text(REFS[7]) == (
        "clear lungs per prior ca n't exclude early pneumonia in the rll dr. ___ was paged at 10:30 a.m."
    )
    assert normalise_text(REFS[8]) == (
        "moderate cardiomegaly multifocal opacities -lrb- r > l -rrb- concerning for pneumonia ~ 50 % "
        "larger than on 1/2/2150"
    )


def test_normalisation_of_blank_and_multiline_text():
    assert normalise_text("") == ""
    assert normalise_text("  ...  ") == ""
    assert normalise_text("No effusion.\r\nNo pneumothorax.\n") == "no effusion no pneumothorax"


# ------------------------------------------------------------------ pinned pycocoevalcap values


def test_bleu_matches_pycocoevalcap():
    metric = BleuMetric()
    rows = metric.per_sample(REFS, PREDS)
    assert list(rows["bleu4"]) == pytest.approx(PINNED_BLEU4_PER_SAMPLE, abs=1e-6)
    corpus = metric.aggregate(rows)
    assert [corpus[f"bleu{n}"] for n in (1, 2, 3, 4)] == pytest.approx(PINNED_BLEU_CORPUS, abs=1e-6)


def test_rouge_matches_pycocoevalcap():
    metric = RougeMetric()
    rows = metric.per_sample(REFS, PREDS)
    assert list(rows["rougeL"]) == pytest.approx(PINNED_ROUGE_PER_SAMPLE, abs=1e-6)
    assert metric.aggregate(rows)["rougeL"] == pytest.approx(PINNED_ROUGE_CORPUS, abs=1e-6)


EXTRA_REFS = ["No pneumothorax.", "Small left effusion.", "Heart size is normal."]
EXTRA_PREDS = ["", "Small ||| left\neffusion.", "Heart size is normal."]


@pytest.fixture(scope="module")
def jar():
    """One METEOR jar for all tests of this module: starting it takes 10-20 s."""
    if shutil.which("java") is None:
        pytest.skip("METEOR needs a Java runtime")
    with MeteorMetric().open_jar() as process:
        yield process


@pytest.fixture(scope="module")
def meteor_rows(jar) -> pd.DataFrame:
    """METEOR rows for PAIRS plus three awkward predictions."""
    return MeteorMetric().per_sample_with(jar, REFS + EXTRA_REFS, PREDS + EXTRA_PREDS)


@needs_java
def test_meteor_matches_pycocoevalcap(meteor_rows):
    rows = meteor_rows.iloc[: len(PAIRS)]
    assert list(rows["meteor"]) == pytest.approx(PINNED_METEOR_PER_SAMPLE, abs=1e-4)
    assert MeteorMetric().aggregate(rows)["meteor"] == pytest.approx(PINNED_METEOR_CORPUS, abs=1e-4)


@needs_java
def test_meteor_python_formula_equals_the_jar(meteor_rows, jar):
    stats = meteor_rows[list(MeteorMetric.STAT_COLUMNS)].to_numpy().tolist()
    for row, jar_score in zip(stats, meteor_rows["meteor"]):
        assert meteor_from_stats(row) == pytest.approx(jar_score, abs=1e-12)
    # Resamples with repeats, including the perfectly matched sample (index 9, 13), against the
    # jar's own corpus score (EVAL over the same stats lines).
    rng = random.Random(7)
    resamples = [[rng.randrange(len(stats)) for _ in range(len(stats))] for _ in range(3)] + [[9, 9, 0, 13]]
    for idx in resamples:
        _, jar_corpus = jar.evaluate([stats[i] for i in idx])
        ours = MeteorMetric().aggregate(meteor_rows.iloc[idx])["meteor"]
        assert ours == pytest.approx(jar_corpus, abs=1e-12)
    # Raw text that would break the line protocol is sanitised by the client.
    assert jar.stats("small left effusion", "small ||| left\neffusion") == jar.stats(
        "small left effusion", "small left effusion"
    )


@needs_java
def test_meteor_empty_and_protocol_breaking_predictions(meteor_rows):
    empty, unsafe, identical = meteor_rows.iloc[len(PAIRS)], meteor_rows.iloc[len(PAIRS) + 1], meteor_rows.iloc[-1]
    assert empty["meteor"] == 0.0
    assert empty["meteor_test_len"] == 0 and empty["meteor_ref_len"] == 2  # "no pneumothorax"
    # Normalisation has already split "|||" into "| | |" and removed the line break.
    assert 0.0 < unsafe["meteor"] < 1.0
    assert identical["meteor"] == 1.0


# ------------------------------------------------------------------ hand-computed cases


def test_bleu_hand_computed():
    # ref "a b c d" vs "a b c e": p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0 (tiny), equal lengths.
    stats = bleu_stats("a b c d", "a b c e")
    assert (stats.testlen, stats.reflen, stats.guess, stats.correct) == (4, 4, (4, 3, 2, 1), (3, 2, 1, 0))
    b1, b2, b3, b4 = bleu_from_counts(stats.testlen, stats.reflen, stats.guess, stats.correct)
    assert b1 == pytest.approx(0.75, abs=1e-8)
    assert b2 == pytest.approx((0.75 * 2 / 3) ** 0.5, abs=1e-8)
    assert b3 == pytest.approx((0.75 * 2 / 3 * 0.5) ** (1 / 3), abs=1e-8)
    assert b4 < 1e-3
    # Brevity penalty: "a b" against "a b c d": p1 = p2 = 1, BP = exp(1 - 4/2).
    b1, b2, _, _ = bleu_from_counts(*_flat(bleu_stats("a b c d", "a b")))
    assert b1 == pytest.approx(pytest.approx(2.718281828 ** -1, abs=1e-6))
    # Clipping: "the the the" against "the cat": one "the" counts.
    assert bleu_stats("the cat", "the the the").correct[0] == 1


def _flat(stats):
    return stats.testlen, stats.reflen, stats.guess, stats.correct


def test_identical_and_disjoint_texts():
    text = "Small left pleural effusion. No pneumothorax."
    bleu, rouge = BleuMetric(), RougeMetric()
    same_b, same_r = bleu.per_sample([text], [text]), rouge.per_sample([text], [text])
    assert same_b["bleu4"][0] == pytest.approx(1.0, abs=1e-8)  # not exactly 1: the 1e-9 smoothing
    assert bleu.aggregate(same_b)["bleu4"] == pytest.approx(1.0, abs=1e-8)
    assert same_r["rougeL"][0] == 1.0
    other = "Heart size normal."
    assert bleu.per_sample([text], [other])["bleu4"][0] < 1e-12
    assert bleu.per_sample([text], [other])["bleu1"][0] < 1e-12
    assert rouge.per_sample([text], [other])["rougeL"][0] == 0.0


def test_rouge_hand_computed():
    # LCS("a b c d", "a c d e") = 3: P = R = 3/4, so F = 3/4 whatever beta.
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    # P = 1 (2/2), R = 1/2: F = (1 + 1.44) * 0.5 / (0.5 + 1.44) = 0.628866...
    assert rouge_l("a b c d", "a b") == pytest.approx(2.44 * 0.5 / 1.94)


def _lcs_table(a, b) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_bit_parallel_lcs_equals_dynamic_programme():
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcdef") for _ in range(rng.randint(0, 40))]
        assert lcs_length(a, b) == _lcs_table(a, b)
        assert lcs_length(a, b) == lcs_length(b, a)


def test_empty_prediction_scores_zero():
    refs, preds = ["No pneumothorax.", "Mild edema."], ["", "Mild edema."]
    bleu_rows = BleuMetric().per_sample(refs, preds)
    assert bleu_rows["bleu4"][0] == 0.0
    assert (bleu_rows.loc[0, ["bleu_testlen", "bleu_reflen", "bleu_guess1"]] == [0, 2, 0]).all()
    rouge_rows = RougeMetric().per_sample(refs, preds)
    assert rouge_rows["rougeL"][0] == 0.0
    assert RougeMetric().aggregate(rouge_rows)["rougeL"] == pytest.approx(0.5)


# ------------------------------------------------------------------ aggregation of resamples


@pytest.mark.parametrize("metric_cls", [BleuMetric, RougeMetric])
def test_resample_aggregate_equals_scoring_the_repeated_corpus(metric_cls):
    metric = metric_cls()
    rows = metric.per_sample(REFS, PREDS)
    idx = [0, 0, 3, 3, 3, 9, 10, 5, 1, 1]
    direct = metric.aggregate(metric.per_sample([REFS[i] for i in idx], [PREDS[i] for i in idx]))
    assert metric.aggregate(rows.iloc[idx]) == pytest.approx(direct, abs=1e-15)


@needs_java
def test_meteor_resample_aggregate_equals_scoring_the_repeated_corpus(meteor_rows, jar):
    idx = [0, 0, 3, 3, 3, 9, 9, 10, 11, 5, 1]
    all_refs, all_preds = REFS + EXTRA_REFS, PREDS + EXTRA_PREDS
    direct = MeteorMetric().per_sample_with(jar, [all_refs[i] for i in idx], [all_preds[i] for i in idx])
    resampled = MeteorMetric().aggregate(meteor_rows.iloc[idx])["meteor"]
    assert resampled == pytest.approx(MeteorMetric().aggregate(direct)["meteor"], abs=1e-12)
    # ... and equals the jar's own corpus score of the repeated corpus.
    _, jar_corpus = jar.evaluate(direct[list(MeteorMetric.STAT_COLUMNS)].to_numpy().tolist())
    assert resampled == pytest.approx(jar_corpus, abs=1e-12)


@needs_java
@pytest.mark.slow
def test_meteor_per_sample_starts_its_own_jar():
    rows = MeteorMetric().per_sample(REFS[:3], PREDS[:3])
    assert list(rows["meteor"]) == pytest.approx(PINNED_METEOR_PER_SAMPLE[:3], abs=1e-4)


def test_sanitise_for_meteor():
    assert sanitise_for_meteor("a ||| b\nc\r\n  d") == "a b c d"


def test_sum_meteor_stats_skips_chunks_of_perfect_matches():
    perfect = [3, 3, 0, 0, 3, 3, 0, 0] + [0] * 12 + [1, 3, 3]
    partial = [4, 4, 0, 0, 2, 2, 0, 0] + [0] * 12 + [2, 2, 2]
    total = dict(zip(METEOR_STAT_FIELDS, sum_meteor_stats([perfect, partial])))
    assert total["chunks"] == 2 and total["test_len"] == 7 and total["test_word_matches"] == 5


# ------------------------------------------------------------------ errors and availability


def test_registry_and_columns():
    assert get_metric("bleu").columns == ("bleu4",)
    assert get_metric("rouge").columns == ("rougeL",)
    assert get_metric("meteor").columns == ("meteor",)
    rows = get_metric("bleu").per_sample(["a b"], ["a b"])
    assert all(c.startswith("bleu") for c in rows.columns)


def test_meteor_without_java_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    metric = MeteorMetric()
    with pytest.raises(MetricUnavailable, match="needs a Java runtime") as info:
        metric.check()
    assert "default-jre-headless" in info.value.remedy
    with pytest.raises(MetricUnavailable):
        metric.per_sample(["a"], ["a"])


def test_bad_input_is_a_clear_error():
    with pytest.raises(BenchError, match="2 references but 1 predictions"):
        BleuMetric().per_sample(["a", "b"], ["a"])
    with pytest.raises(BenchError, match="prediction 0 is NoneType"):
        RougeMetric().per_sample(["a"], [None])
    with pytest.raises(BenchError, match="lack columns"):
        BleuMetric().aggregate(pd.DataFrame({"bleu4": [0.5]}))
    with pytest.raises(BenchError, match="zero samples"):
        RougeMetric().aggregate(RougeMetric().per_sample([], []))


@pytest.mark.parametrize("name", ["bleu", "rouge", "meteor"])
def test_resampling_fast_path_gives_the_generic_paths_numbers(name):
    """The additive path (counts x statistics) and re-aggregating resampled rows agree exactly."""
    from bench.stats.bootstrap import bootstrap
    from bench.stats.paired import paired_randomization_test

    if name == "meteor" and not java_available():
        pytest.skip("METEOR needs a Java runtime")
    refs = ["No effusion. Heart normal.", "Left pleural effusion.", "Lungs clear.", "Mild edema and cardiomegaly."] * 6
    a = ["No effusion.", "Right pleural effusion.", "Lungs are clear.", "Cardiomegaly."] * 6
    b = ["No effusion. Heart normal.", "Right pleural effusion.", "Lungs clear.", "Cardiomegaly and edema."] * 6
    m = get_metric(name)
    ra, rb = m.per_sample(refs, a), m.per_sample(refs, b)
    ra["id"] = rb["id"] = [str(i) for i in range(len(refs))]
    fast, slow = bootstrap(m, ra, 100, seed=3), bootstrap(lambda r: m.aggregate(r), ra, 100, seed=3)
    for k in fast:
        assert fast[k].low == pytest.approx(slow[k].low, abs=1e-12)
        assert fast[k].high == pytest.approx(slow[k].high, abs=1e-12)
    assert paired_randomization_test(m, ra, rb, 300) == paired_randomization_test(lambda r: m.aggregate(r), ra, rb, 300)
