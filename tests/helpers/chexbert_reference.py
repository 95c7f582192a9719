"""The f1chexbert reference labeller run on local files, and random checkpoints in its format.

Used by the identity tests (tests/test_chexbert.py) and the speed benchmark
(benchmarks/chexbert_speed.py): both need CheXbert weights we can write here (the real
chexbert.pth cannot be downloaded in CI) and the reference package reading them.

f1chexbert 0.0.2 predates transformers 5, where tokenizers lost `encode_plus`; the reference
tokenizer gets a shim with the old behaviour for a list of tokens ([CLS] + their ids +
[SEP]). Everything else - text cleaning, truncation, model, argmax, label mapping - is the
package's own code. Its hub look-ups (tokenizer, BERT config, checkpoint) are pointed at the
local files for as long as the context manager is open.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from bench.metrics.chexbert import _build_model, load_tokenizer
from bench.metrics.f1 import BLANK, NEGATIVE, POSITIVE, UNCERTAIN

# f1chexbert's "classification" mode values -> our class codes.
REFERENCE_CODES = {"": BLANK, 1: POSITIVE, 0: NEGATIVE, -1: UNCERTAIN}


def write_random_checkpoint(dirpath: Path, vocab: Path, texts: Sequence[str], hidden: int, layers: int,
                            intermediate: int, seed: int = 0) -> tuple[Path, Path]:
    """A random CheXbert checkpoint in chexbert.pth's format, and its BERT part as a HF directory.

    A random BERT's [CLS] state is almost the same vector whatever the text, so random heads
    would give every report the same labels. The heads are centred on the mean [CLS] state of
    `texts` (logits = W (cls - mean)), so labels vary from report to report.
    """
    import torch
    from transformers import BertConfig

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=max(1, hidden // 64), intermediate_size=intermediate,
                        initializer_range=0.1)
    model = _build_model(config).eval()
    tok = load_tokenizer(vocab)
    batch = tok(list(texts), padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        cls = model.bert(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state[:, 0]
        mean_cls = cls.mean(0)
        for head in model.linear_heads:
            head.weight.normal_(0, 1.0)
            head.bias.copy_(-head.weight @ mean_cls)
    dirpath.mkdir(parents=True, exist_ok=True)
    ckpt = dirpath / "chexbert.pth"
    # As saved from DataParallel during training: "module." prefixes, under "model_state_dict".
    torch.save({"epoch": 3, "model_state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, ckpt)
    bert_dir = dirpath / "bert"
    model.bert.save_pretrained(bert_dir)
    return ckpt, bert_dir


@contextmanager
def reference_labeller(ckpt: Path, bert_dir: Path, vocab: Path) -> Iterator[object]:
    """f1chexbert.F1CheXbert reading `ckpt`, `bert_dir` and `vocab` instead of the hub.

    Raises ImportError when f1chexbert is not installed (`pip install --no-deps f1chexbert appdirs`).
    """
    import f1chexbert.f1chexbert as f1mod
    from transformers import BertConfig

    tok = load_tokenizer(vocab)

    def encode_plus(tokens):  # transformers 4 behaviour for a list of tokens
        return {"input_ids": [tok.cls_token_id] + tok.convert_tokens_to_ids(tokens) + [tok.sep_token_id]}

    object.__setattr__(tok, "encode_plus", encode_plus)

    class HubTokenizer:
        @staticmethod
        def from_pretrained(name):
            assert name == "bert-base-uncased", name
            return tok

    class HubConfig:  # its inference path builds BERT from bert-base-uncased's config
        @staticmethod
        def from_pretrained(name):
            assert name == "bert-base-uncased", name
            return BertConfig.from_pretrained(bert_dir)

    patches = {"BertTokenizer": HubTokenizer, "AutoConfig": HubConfig, "CACHE_DIR": str(ckpt.parent)}
    saved = {name: getattr(f1mod, name) for name in patches}
    try:
        for name, value in patches.items():
            setattr(f1mod, name, value)
        yield f1mod.F1CheXbert(device="cpu")
    finally:
        for name, value in saved.items():
            setattr(f1mod, name, value)


def reference_labels(ref, reports: Sequence[str]) -> list[list[int]]:
    """The reference's labels, one report at a time, as our class codes (n, 14)."""
    return [[REFERENCE_CODES[v] for v in ref.get_label(r.strip(), mode="classification")] for r in reports]
