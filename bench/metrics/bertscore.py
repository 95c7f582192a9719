"""BERTScore (Zhang et al. 2020) as the chest X-ray leaderboards compute it (metric "bertscore").

Per pair, every token of both texts is embedded by layer `num_layers` of a pretrained encoder;
each candidate token is matched to its most similar reference token by cosine similarity
(precision), each reference token to its most similar candidate token (recall), the matches are
averaged (weighted by idf when `idf` is on; otherwise every token but the start and end tokens
weighs 1), F = 2PR / (P + R), and with baseline rescaling each of P, R and F becomes
(x - b) / (1 - b) with the baseline b of that model and layer. The corpus value is the mean of
the per-pair F.

Defaults follow CXR-Report-Metric, which ReXrank runs and RadCliQ-v1 was fitted on:
distilroberta-base, layer 5, no idf, baseline rescaling (docs/metrics-text-similarity.md says
which toolkit uses what). Everything the bert-score package (0.3.13) does that changes a number
is done the same way here:

- text: stripped; an empty text is just the start and end tokens; truncated to the tokenizer's
  `model_max_length`; byte-level BPE tokenizers (RoBERTa, GPT-2) get a space before the first
  word (`add_prefix_space`, as bert-score asks for under transformers 4; transformers 5 ignores
  that argument of `encode`, so the package there scores RoBERTa models differently);
- the model is cut after `num_layers` layers and its last hidden state used;
- idf over the references of the run, log((N + 1) / (df + 1)), unseen tokens log(N + 1);
- a pair where either side is empty scores P = R = F = 0 before rescaling; an F whose P + R
  is 0 is 0.

What is ours is the speed (docs/benchmarks.md): texts are embedded once each (a report shared
by several samples, or scored against several systems, is embedded once), sorted by token
length and batched under a token budget so that padding is small, and embeddings are kept in
memory by text, so a second system scored against the same references embeds only its own
predictions. Raw pair scores are also kept on disk (<cache>/bertscore/pairs.sqlite), keyed by
the model's fingerprint and both texts, so re-scoring a run computes nothing.

One difference from the package, by design: bert-score pads the pairs of a batch together and
multiplies similarities by the padding mask, so in a padded pair a token whose similarities are
all negative gets a best match of 0 instead of its true maximum; here every maximum is the true
one. The two agree wherever each token has some non-negative similarity (tests compare them
with unpadded batches, and on such data).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from pydantic import Field

from bench.errors import MetricUnavailable
from bench.metrics.means import MeanScoresMetric
from bench.metrics.text_cache import TextCache, file_sha256, text_key
from bench.options import OptionsModel

log = logging.getLogger(__name__)

DEFAULT_MODEL = "distilroberta-base"
CPU_BATCH = 16  # texts per forward pass on the CPU by default
# Layers bert-score 0.3.13 uses by default (its model2layers table), for the models the
# field's toolkits name.
DEFAULT_LAYERS = {"distilroberta-base": 5, "distilbert-base-uncased": 5, "roberta-large": 17,
                  "bert-base-uncased": 9, "microsoft/deberta-xlarge-mnli": 40}
# Rescaling baselines (P, R, F) for English, from bert-score 0.3.13's
# rescale_baseline/en/<model>.tsv, the row of the layer: the numbers published with the package.
BASELINES = {
    ("distilroberta-base", 5): (0.84732, 0.84759504, 0.8473319),
    ("distilbert-base-uncased", 5): (0.6666034, 0.66660464, 0.66620487),
}
# Part of the pair cache's key: bump when a change here could change a raw score.
SCORES_VERSION = "bertscore-1"
HUB_FILES = ["config.json", "*.safetensors", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model"]
BYTE_LEVEL_TOKENIZERS = ("RobertaTokenizer", "RobertaTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast")


def locate_model(model: str, hf_cache_dir: Path | None = None) -> Path:
    """A local directory holding the encoder: `model` itself, or its Hugging Face snapshot."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MetricUnavailable(f"BERTScore model directory {path} has no config.json",
                                    "point model= at a Hugging Face model directory")
        return path
    if model.startswith((".", "/", "~")):
        raise MetricUnavailable(f"BERTScore model directory {path} does not exist",
                                "point model= at a Hugging Face model directory or give a hub id")
    from huggingface_hub import snapshot_download

    from bench.hub import hub_reachable, offline

    local_only = offline() or not hub_reachable()
    try:
        found = Path(snapshot_download(model, cache_dir=hf_cache_dir, allow_patterns=HUB_FILES,
                                       local_files_only=local_only))
    except Exception as exc:  # not cached and no network, unknown repo, gated repo: all "unavailable"
        where = "offline" if offline() else ("the hub is not reachable" if local_only else f"the download failed "
                                             f"({type(exc).__name__})")
        raise MetricUnavailable(f"BERTScore model {model} is not in the Hugging Face cache and {where}",
                                f"download it with `hf download {model}` or set --metric-opt "
                                f"bertscore.model=/path/to/{model.split('/')[-1]}") from None
    if not (found / "config.json").is_file():
        raise MetricUnavailable(f"BERTScore model {model}: the cached snapshot {found} has no config.json",
                                f"download it again with `hf download {model}`")
    return found


def model_fingerprint(model_dir: Path, num_layers: int) -> str:
    """Identifies what embeddings depend on: the model's and tokenizer's files, the layer, the code."""
    parts = [SCORES_VERSION, str(num_layers)]
    for f in sorted(model_dir.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            parts.append(f"{f.name}:{file_sha256(f)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if type(tokenizer).__name__ in BYTE_LEVEL_TOKENIZERS:
        # bert-score encodes with add_prefix_space=True for these; only the constructor honours it now.
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), add_prefix_space=True)
    return tokenizer


def load_truncated_model(model_dir: Path, num_layers: int, device: str):
    """The encoder cut after `num_layers` layers (what bert-score runs), in eval mode."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir))
    if hasattr(model, "encoder") and hasattr(model.encoder, "layer"):  # BERT, RoBERTa
        layers_owner, attr = model.encoder, "layer"
    elif hasattr(model, "transformer") and hasattr(model.transformer, "layer"):  # DistilBERT
        layers_owner, attr = model.transformer, "layer"
    else:
        raise MetricUnavailable(f"BERTScore model {model_dir}: architecture {type(model).__name__} is not supported",
                                "use a BERT, RoBERTa or DistilBERT encoder")
    layers = getattr(layers_owner, attr)
    if not 0 <= num_layers <= len(layers):
        raise MetricUnavailable(f"BERTScore num_layers={num_layers}, but {model_dir} has {len(layers)} layers",
                                f"choose a layer between 0 and {len(layers)}")
    setattr(layers_owner, attr, torch.nn.ModuleList(list(layers)[:num_layers]))
    return model.to(device).eval()


class BertScorer:
    """Texts -> normalised token embeddings (cached by text) -> greedy-matching P, R, F."""

    def __init__(self, model_dir: Path, num_layers: int, device: str = "cpu", batch_size: int = CPU_BATCH,
                 batch_tokens: int = 8192, cache_mb: float = 2048.0):
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_truncated_model(model_dir, num_layers, device)
        self.device = device
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        self.cache_bytes = int(cache_mb * 2 ** 20)
        self._embeddings: OrderedDict[str, tuple[Any, np.ndarray]] = OrderedDict()  # text -> (emb, ids)
        self._bytes = 0
        self.embedded_texts = 0  # texts run through the model so far (for benchmarks and logs)

    # -- tokens ---------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        tok = self.tokenizer
        stripped = [t.strip() for t in texts]
        nonempty = [t for t in stripped if t]
        ids = iter(tok(nonempty, add_special_tokens=True, truncation=True,
                       max_length=tok.model_max_length)["input_ids"]) if nonempty else iter(())
        # What build_inputs_with_special_tokens([]) gave (gone in transformers 5): start and end tokens.
        empty = list(tok("", add_special_tokens=True)["input_ids"])
        return [list(next(ids)) if t else list(empty) for t in stripped]

    # -- embeddings -----------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> None:
        """Embed the texts not in memory yet; longest first, in batches under a token budget."""
        import torch

        todo = [t for t in dict.fromkeys(texts) if t not in self._embeddings]
        if not todo:
            return
        ids = self.encode(todo)
        order = sorted(range(len(todo)), key=lambda i: len(ids[i]), reverse=True)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        start = 0
        with torch.inference_mode():
            while start < len(order):
                width = len(ids[order[start]])
                count = max(1, min(self.batch_size, self.batch_tokens // max(width, 1)))
                batch = order[start:start + count]
                start += count
                tokens = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    tokens[row, :len(ids[i])] = torch.tensor(ids[i])
                    mask[row, :len(ids[i])] = 1
                out = self.model(tokens.to(self.device), attention_mask=mask.to(self.device))[0].float()
                out = out / out.norm(dim=-1, keepdim=True)
                out = out.cpu()
                for row, i in enumerate(batch):
                    self._remember(todo[i], out[row, :len(ids[i])].clone(), np.asarray(ids[i], dtype=np.int64))
        self.embedded_texts += len(todo)

    def _remember(self, text: str, emb, ids: np.ndarray) -> None:
        self._embeddings[text] = (emb, ids)
        self._bytes += emb.numel() * 4 + ids.nbytes
        while self._bytes > self.cache_bytes and len(self._embeddings) > 1:
            _, (old, old_ids) = self._embeddings.popitem(last=False)
            self._bytes -= old.numel() * 4 + old_ids.nbytes

    # -- scores ---------------------------------------------------------------------------
    def idf_weights(self, references: Sequence[str]) -> dict[int, float]:
        """bert-score's idf over the references (a list, repeats counted): log((N+1)/(df+1))."""
        counts: Counter[int] = Counter()
        for ids in self.encode(references):
            counts.update(set(ids))
        n = len(references)
        return {i: math.log((n + 1) / (c + 1)) for i, c in counts.items()} | {-1: math.log(n + 1)}

    def _weights(self, ids: np.ndarray, idf: dict[int, float] | None):
        import torch

        if idf is None:
            special = {self.tokenizer.sep_token_id, self.tokenizer.cls_token_id}
            w = [0.0 if i in special else 1.0 for i in ids.tolist()]
        else:
            default = idf[-1]
            w = [idf.get(i, default) for i in ids.tolist()]
        return torch.tensor(w, dtype=torch.float32)

    def score_pairs(self, references: Sequence[str], candidates: Sequence[str],
                    idf: dict[int, float] | None = None) -> np.ndarray:
        """(n, 3) raw (P, R, F) per pair, not rescaled."""
        import torch

        self.embed(list(references) + list(candidates))
        out = np.zeros((len(references), 3), dtype=np.float64)
        with torch.inference_mode():
            for k, (ref, cand) in enumerate(zip(references, candidates)):
                r_emb, r_ids = self._embeddings_of(ref)
                c_emb, c_ids = self._embeddings_of(cand)
                if len(r_ids) == 2 or len(c_ids) == 2:  # an empty side: bert-score's zeros
                    continue
                sim = c_emb @ r_emb.T
                wc, wr = self._weights(c_ids, idf), self._weights(r_ids, idf)
                p = float((sim.max(dim=1).values * (wc / wc.sum())).sum())
                r = float((sim.max(dim=0).values * (wr / wr.sum())).sum())
                p, r = (0.0 if math.isnan(p) else p), (0.0 if math.isnan(r) else r)
                f = 2 * p * r / (p + r) if p + r != 0 else 0.0
                out[k] = (p, r, f)
        return out

    def _embeddings_of(self, text: str):
        if text not in self._embeddings:  # evicted since embed(): the cache is smaller than one batch of pairs
            self.embed([text])
        emb, ids = self._embeddings[text]
        return emb, ids


class BertScoreMetric(MeanScoresMetric):
    name = "bertscore"
    columns = ("bertscore",)
    headers = {"bertscore": "BERTScore"}
    means = {"bertscore": "bertscore_f", "bertscore_p": "bertscore_p", "bertscore_r": "bertscore_r"}
    description = ("BERTScore F1 (Zhang et al. 2020) as CXR-Report-Metric / ReXrank compute it by default: "
                   "distilroberta-base layer 5, no idf, baseline rescaling (bert-score 0.3.13's baseline), "
                   "mean over samples; equal to the bert-score package")

    class Options(OptionsModel):
        model: str = DEFAULT_MODEL  # Hugging Face id or local directory
        num_layers: int | None = Field(None, ge=0)  # default: bert-score's layer for the model
        idf: bool = False  # idf weights from the references of the run
        rescale_with_baseline: bool = True
        baseline: str | None = None  # "P,R,F" for a model/layer without a published baseline here
        device: str = "cpu"
        batch_size: int | None = Field(None, ge=1)  # texts per forward pass at most (default: 16 on CPU, 64 else)
        batch_tokens: int = Field(8192, ge=16)  # padded tokens per forward pass at most
        embedding_cache_mb: float = Field(2048.0, ge=0)  # token embeddings kept in memory, by text
        pair_cache: bool = True  # raw scores on disk in <cache root>/bertscore/pairs.sqlite
        hf_cache_dir: Path | None = None

    def __init__(self, model: str = DEFAULT_MODEL, num_layers: int | None = None, idf: bool = False,
                 rescale_with_baseline: bool = True, baseline: str | None = None, device: str = "cpu",
                 batch_size: int | None = None, batch_tokens: int = 8192, embedding_cache_mb: float = 2048.0,
                 pair_cache: bool = True, hf_cache_dir: Path | None = None):
        self.model = str(model)
        self.model_name = self.model.rstrip("/").split("/")[-1] if Path(self.model).expanduser().is_dir() \
            else self.model
        self.num_layers = num_layers if num_layers is not None else DEFAULT_LAYERS.get(self.model_name)
        self.idf, self.rescale = bool(idf), bool(rescale_with_baseline)
        self.baseline_text = baseline
        self.device, self.batch_tokens = str(device), int(batch_tokens)
        # A CPU's matrix products run at the same speed on 16 texts as on 64, so small batches only
        # save padding (1.4x faster on 64 pairs, docs/benchmarks.md); a GPU wants the larger batch.
        self.batch_size = int(batch_size) if batch_size else (CPU_BATCH if self.device == "cpu" else 64)
        self.embedding_cache_mb, self.pair_cache = float(embedding_cache_mb), bool(pair_cache)
        self.hf_cache_dir = Path(hf_cache_dir).expanduser() if hf_cache_dir else None
        self._dir: Path | MetricUnavailable | None = None
        self._scorer: BertScorer | None = None
        self._fingerprint: str | None = None

    # -- what it needs ----------------------------------------------------------------------
    def baseline_values(self) -> tuple[float, float, float] | None:
        if not self.rescale:
            return None
        if self.baseline_text:
            try:
                values = tuple(float(x) for x in self.baseline_text.split(","))
            except ValueError:
                values = ()
            if len(values) != 3 or not all(v < 1 for v in values):
                raise MetricUnavailable(f"bertscore baseline={self.baseline_text!r} is not three numbers P,R,F below 1",
                                        "give the baseline as P,R,F, e.g. 0.84732,0.84759504,0.8473319")
            return values  # type: ignore[return-value]
        found = BASELINES.get((self.model_name, self.num_layers))
        if found is None:
            raise MetricUnavailable(f"no published rescaling baseline for {self.model_name} layer {self.num_layers}",
                                    "pass --metric-opt bertscore.baseline=P,R,F (bert-score's rescale_baseline "
                                    "files have them) or bertscore.rescale_with_baseline=false")
        return found

    def model_dir(self) -> Path:
        if self._dir is None:
            try:
                self._dir = locate_model(self.model, self.hf_cache_dir)
            except MetricUnavailable as exc:
                self._dir = exc
        if isinstance(self._dir, MetricUnavailable):
            raise self._dir
        return self._dir

    def check(self) -> None:
        if self.num_layers is None:
            raise MetricUnavailable(f"bertscore has no default layer for model {self.model_name}",
                                    "pass --metric-opt bertscore.num_layers=N")
        self.baseline_values()
        self.model_dir()

    def scorer(self) -> BertScorer:
        if self._scorer is None:
            self.check()
            self._scorer = BertScorer(self.model_dir(), int(self.num_layers), self.device, self.batch_size,
                                      self.batch_tokens, self.embedding_cache_mb)
        return self._scorer

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_dir(), int(self.num_layers))
        return self._fingerprint

    # -- scoring ----------------------------------------------------------------------------
    def raw_scores(self, references: Sequence[str], predictions: Sequence[str]) -> np.ndarray:
        """(n, 3) raw P, R, F; from the pair cache where it has them."""
        scorer = self.scorer()
        idf = scorer.idf_weights(references) if self.idf else None
        if not self.pair_cache:
            return scorer.score_pairs(references, predictions, idf)
        model = self.fingerprint()
        if idf is not None:  # idf depends on the whole reference set: part of the key
            model += "-idf-" + hashlib.sha256("\n".join(sorted(map(text_key, references))).encode()).hexdigest()[:12]
        keys = [text_key(text_key(r) + text_key(p)) for r, p in zip(references, predictions)]
        pairs = dict(zip(keys, zip(references, predictions)))
        with TextCache(self.resolved_cache_root() / "bertscore" / "pairs.sqlite", "pairs", "scores") as cache:
            found = cache.get_or_compute(model, pairs, lambda batch: scorer.score_pairs(
                [r for r, _ in batch], [p for _, p in batch], idf).tolist(), 4096, "bertscore")
        return np.array([found[k] for k in keys], dtype=np.float64).reshape(len(keys), 3)

    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        if len(references) != len(predictions):
            raise ValueError(f"bertscore: {len(references)} references but {len(predictions)} predictions")
        raw = self.raw_scores(list(references), list(predictions))
        base = self.baseline_values()
        if base is not None:
            b = np.asarray(base)
            raw = (raw - b) / (1 - b)
        return pd.DataFrame({"bertscore_p": raw[:, 0], "bertscore_r": raw[:, 1], "bertscore_f": raw[:, 2]})

    def signature_settings(self) -> dict:
        base = self.baseline_values()
        out: dict[str, Any] = {"model": self.model_name, "layer": self.num_layers, "idf": "yes" if self.idf else "no",
                               "rescale": f"{base[2]:.6g}" if base else "no"}
        try:
            out["model_sha"] = self.fingerprint()[:12]
        except MetricUnavailable:
            pass
        return out

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(model=self.model, num_layers=self.num_layers, idf=self.idf, rescale_with_baseline=self.rescale,
                   batch_size=self.batch_size, batch_tokens=self.batch_tokens)
        try:
            cfg.update(baseline=self.baseline_values(), model_dir=str(self.model_dir()),
                       fingerprint=self.fingerprint())
        except MetricUnavailable:
            cfg.update(model_dir=None)
        return cfg
