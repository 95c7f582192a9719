"""Tiny random text encoders in Hugging Face format, for the BERTScore identity tests and benchmark.

The field's BERTScore model is distilroberta-base (RoBERTa architecture, byte-level BPE
tokenizer); its weights cannot be downloaded here. These helpers write checkpoints of the same
architecture with random weights and a byte-level BPE vocabulary trained on the given texts
with the `tokenizers` library, so that both our implementation and the bert-score package load
them through `AutoModel` / `AutoTokenizer` exactly as they load the real model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def write_tiny_roberta(dirpath: Path, texts: Sequence[str], hidden: int = 32, layers: int = 3,
                       intermediate: int = 64, vocab_size: int = 600, seed: int = 0,
                       initializer_range: float = 0.2) -> Path:
    """A random RobertaModel with a byte-level BPE tokenizer trained on `texts`; returns the directory."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    dirpath = Path(dirpath)
    dirpath.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(dirpath))  # vocab.json + merges.txt, the files RoBERTa's tokenizers read
    import inspect
    import json

    if "vocab" in inspect.signature(RobertaTokenizerFast.__init__).parameters:  # transformers >= 5
        vocab = json.loads((dirpath / "vocab.json").read_text(encoding="utf-8"))
        merges = [tuple(line.split(" ")) for line in (dirpath / "merges.txt").read_text(encoding="utf-8").splitlines()
                  if line and not line.startswith("#version")]
        tokenizer = RobertaTokenizerFast(vocab=vocab, merges=merges, model_max_length=512)
    else:
        tokenizer = RobertaTokenizerFast(vocab_file=str(dirpath / "vocab.json"),
                                         merges_file=str(dirpath / "merges.txt"), model_max_length=512)
    tokenizer.save_pretrained(dirpath)
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=len(tokenizer),
                           hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 16),
                           intermediate_size=intermediate, max_position_embeddings=514, type_vocab_size=1,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, initializer_range=initializer_range)
    RobertaModel(config, add_pooling_layer=False).eval().save_pretrained(dirpath)
    return dirpath


def write_tiny_bert(dirpath: Path, vocab: Path, hidden: int = 32, layers: int = 2, intermediate: int = 64,
                    seed: int = 0) -> Path:
    """A random BertModel with the uncased WordPiece vocabulary `vocab`; returns the directory."""
    import torch
    from transformers import BertConfig, BertModel

    dirpath = write_tiny_bert_tokenizer(dirpath, vocab)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=max(1, hidden // 16), intermediate_size=intermediate,
                        initializer_range=0.2)
    BertModel(config, add_pooling_layer=False).eval().save_pretrained(dirpath)
    return dirpath


# RaTE-NER's label set: B-/I- tags of its five entity types, and O.
RATE_NER_LABELS = ("O", "B-ABNORMALITY", "I-ABNORMALITY", "B-NON-ABNORMALITY", "I-NON-ABNORMALITY", "B-DISEASE",
                   "I-DISEASE", "B-NON-DISEASE", "I-NON-DISEASE", "B-ANATOMY", "I-ANATOMY")


def write_tiny_deberta_ner(dirpath: Path, vocab: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random DebertaV2ForTokenClassification with RaTE-NER's labels (the architecture of
    Angelakeke/RaTE-NER-Deberta) and the uncased WordPiece tokenizer; returns the directory."""
    import torch
    from transformers import DebertaV2Config, DebertaV2ForTokenClassification

    dirpath = write_tiny_bert_tokenizer(dirpath, vocab)
    torch.manual_seed(seed)
    config = DebertaV2Config(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=max(1, hidden // 16), intermediate_size=2 * hidden,
                             max_position_embeddings=512, relative_attention=True, position_buckets=64,
                             pos_att_type=["p2c", "c2p"], initializer_range=0.5,
                             id2label=dict(enumerate(RATE_NER_LABELS)),
                             label2id={label: i for i, label in enumerate(RATE_NER_LABELS)})
    DebertaV2ForTokenClassification(config).eval().save_pretrained(dirpath)
    return dirpath


def write_tiny_mpnet(dirpath: Path, vocab: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random MPNetModel (the architecture of FremyCompany/BioLORD-2023-C) with the uncased
    WordPiece tokenizer; returns the directory."""
    import torch
    from transformers import MPNetConfig, MPNetModel

    dirpath = write_tiny_bert_tokenizer(dirpath, vocab)
    torch.manual_seed(seed)
    config = MPNetConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 16), intermediate_size=2 * hidden,
                         max_position_embeddings=514, pad_token_id=0)
    MPNetModel(config).eval().save_pretrained(dirpath)
    return dirpath


def write_tiny_bert_tokenizer(dirpath: Path, vocab: Path) -> Path:
    import shutil

    from transformers import BertTokenizerFast

    dirpath = Path(dirpath)
    dirpath.mkdir(parents=True, exist_ok=True)
    shutil.copy(vocab, dirpath / "vocab.txt")
    import inspect

    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        words = {line.rstrip("\n"): i for i, line in enumerate(Path(vocab).read_text(encoding="utf-8").splitlines(True))}
        tokenizer = BertTokenizerFast(vocab=words, do_lower_case=True, model_max_length=512)
    else:
        tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True, model_max_length=512)
    tokenizer.save_pretrained(dirpath)
    return dirpath
