"""`saerad`: SAE-Rad end to end as a benchmark system (paper §4.2; docs/method.md).

fit:      encode the training images (shared token cache) -> train an SAE on their CLS tokens
          or load one (`sae=DIR`) -> feature index (top-k training images per feature) ->
          label every feature (LLM-free by default, or with an LLM).
generate: encode -> feature activations f_i = h_i ||W_dec[:, i]|| -> active features
          I(x) = {i : f_i > tau}, scored by f_i / max_j f_j -> compose the findings.

Every stage is cached under <cache_dir>/saerad/<stage>-<fingerprint of its inputs>, so a
second run with the same data, encoder and options reuses the SAE, the index and the labels.

Options (strings from `--opt key=value`; `config=FILE` reads a JSON object of the same keys,
which explicit options override):

  sae=DIR            a trained SAE checkpoint (else one is trained; see the recipe keys)
  arch, expansion, l1, steps, batch_size, lr, seed
                     the training recipe; defaults: the paper's (App. B.3) on MIMIC-CXR, and on
                     the phantom the same schedule shape with fewer steps (see PHANTOM_RECIPE)
  labels=FILE        feature labels (a labels file, or a {"id": "text"} map); else computed
  top_k=10           training images per feature for labelling
  llm=none           LLM spec for labelling and composition (bench.llm: openai:URL, anthropic,
                     gguf[:PATH]); "none" = LLM-free labeller and composer
  model=NAME         the LLM's model name
  llm_concurrency=8, llm_timeout=120
                     requests in flight at once and each attempt's limit in seconds; a server
                     that answers one request at a time (llama.cpp) needs llm_concurrency=1,
                     else queued requests run out of time and are retried
  label_prompt=FILE, compose_prompt=FILE   replacement prompt files
  tau=0              activation threshold
  indication=false, priors=false           give the LLM composer the indication / prior reports
  max_sentences=6    cap of the LLM-free composer
  min_score=0.4, pool=sum
                     the LLM-free composer's evidence rules (saerad/compose/llm_free.py): features
                     stating the same finding pool their importance scores, and an abnormal
                     finding is written only with at least min_score of it; both chosen on the
                     phantom's training and validation splits (docs/saerad.md)
  max_features       use only the strongest N active features (default: all above tau)
  device=cpu         where the SAE runs
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
from pydantic import Field

from bench.data.records import Query, Sample
from bench.errors import BenchError, DataError
from bench.jsonfiles import read_json
from bench.options import OptionsModel, validate_options
from bench.systems.base import Prediction, System

log = logging.getLogger(__name__)

# The paper's schedule shape with fewer steps and a larger learning rate, so the phantom SAE
# trains in seconds on a CPU (the same trade as tests/test_sae_recovery.py documents).
PHANTOM_RECIPE = {"steps": 500, "batch_size": 256, "lr": 3e-3,
                  # Sparsity that means the same on any encoder: the paper's L0 (about 15 active
                  # features per image) rather than its lambda, which on the phantom encoder's 192-d
                  # tokens gave an L0 over 50; and a dictionary sized for 2,000 training tokens.
                  "target_l0": 15.0, "expansion": 8}


class SaeRadOptions(OptionsModel):
    sae: str | None = None
    arch: str = "hybrid-gated"
    expansion: int | None = Field(None, ge=1)  # None: 64 (the paper's) on MIMIC-CXR, PHANTOM_RECIPE's on the phantom
    l1: float = Field(8e-3, ge=0)  # the sparsity coefficient; with a target L0, the search's starting point
    target_l0: float | None = Field(None, ge=0)  # None: off on MIMIC-CXR (the paper's lambda), 15 on the phantom; 0: off
    steps: int | None = Field(None, ge=1)  # None: 200,000 on MIMIC-CXR, PHANTOM_RECIPE on the phantom
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    seed: int = 0
    labels: str | None = None
    top_k: int = Field(10, ge=1)
    llm: str = "none"
    model: str | None = None
    llm_concurrency: int = Field(8, ge=1)
    llm_timeout: float = Field(120.0, gt=0)
    label_prompt: str | None = None
    compose_prompt: str | None = None
    label_retries: int = Field(2, ge=0)
    tau: float = 0.0
    indication: bool = False
    priors: bool = False
    max_sentences: int = Field(6, ge=1)
    min_score: float = Field(0.4, ge=0)
    pool: Literal["sum", "max"] = "sum"
    max_features: int | None = Field(None, ge=1)
    device: str = "cpu"
    chunk_size: int = Field(1024, ge=1)
    config: str | None = None
    # Per-feature thresholds learned on the training split (saerad/calibration.py): a label is
    # used only where its feature fires strongly enough for the label to be right at least
    # `min_precision` of the time on training images. 0 turns calibration off.
    min_precision: float = Field(0.0, ge=0, le=1)


def read_config_file(path: str) -> dict[str, Any]:
    """The options stored in a JSON config file (configs/saerad/*.json)."""
    data = read_json(path, "saerad config file", dict)
    data.pop("description", None)  # free text for people reading the file
    return data


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def usage_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Usage counters (`Usage.as_dict()`) accrued between two snapshots of one client."""
    out: dict[str, Any] = {}
    for k, v in after.items():
        if isinstance(v, dict):
            d = {e: n - before.get(k, {}).get(e, 0) for e, n in v.items()}
            out[k] = {e: n for e, n in d.items() if n}
        elif isinstance(v, float):
            out[k] = round(v - before.get(k, 0.0), 3)
        else:
            out[k] = v - before.get(k, 0)
    return out


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class SaeRadSystem(System):
    name = "saerad"
    description = "SAE-Rad: sparse autoencoder features of the CLS token, labelled and composed into findings"
    needs_train = True
    # `--endpoints FILE` gives `llm` @FILE only when the file's [uses] names saerad (not for
    # uses.default), so SAE-Rad stays LLM-free unless asked.
    llm_option = "llm"
    llm_use = "saerad"

    Options = SaeRadOptions

    @classmethod
    def from_options(cls, options=None) -> "SaeRadSystem":
        # A config file's options come first; options given on the command line override them.
        raw = dict(options or {})
        merged = {**read_config_file(raw["config"]), **raw} if raw.get("config") else raw
        return cls(validate_options(SaeRadOptions, merged, "system saerad"))

    def __init__(self, options: SaeRadOptions | None = None):
        super().__init__(options)
        self.opts: SaeRadOptions = self.options  # type: ignore[assignment]
        from bench.devices import check_device

        check_device(self.opts.device)  # a GPU that is not there is the user's error, said now
        self.sae: Any = None
        self.sae_dir: Path | None = None
        self.sae_id: str = ""
        self.index_dir: Path | None = None
        self.labels_path: Path | None = None
        self.labels: dict[int, Any] = {}
        self.label_counts: dict[str, int] = {}
        self.train_info: dict[str, Any] = {}
        self.thresholds: dict[int, Any] = {}  # feature -> calibration.Threshold (empty: off)
        self._client: Any = None
        # LLM usage of each stage (label, compose): one client serves both, so the stage
        # figures are differences of its cumulative counters.
        self.llm_stages: dict[str, dict[str, Any]] = {}

    # -- stages -------------------------------------------------------------------------
    def _llm(self, ctx) -> Any:
        if self.opts.llm.strip().lower() == "none":
            return None
        if self._client is None:
            from bench.llm import make_client

            self._client = make_client(self.opts.llm, self.opts.model, ctx.cache_dir / "llm" / "responses.sqlite",
                                       max_concurrency=self.opts.llm_concurrency, timeout=self.opts.llm_timeout,
                                       use="saerad")
        return self._client

    def close(self) -> None:
        # Stops a managed LLM server this system started, so that a metric whose judge is the
        # same endpoint of the same file can start it again on its port.
        if self._client is not None:
            self._client.close()
            self._client = None

    def _recipe(self, ctx, n_train: int):
        from saerad.sae import TrainConfig

        o = self.opts
        base = PHANTOM_RECIPE if ctx.dataset_name == "phantom" else {}
        steps = o.steps or base.get("steps", TrainConfig.steps)
        batch = o.batch_size or base.get("batch_size", TrainConfig.batch_size)
        if batch > n_train:
            log.warning("batch size %d exceeds the %d training tokens; using %d", batch, n_train, n_train)
            batch = n_train
        target = o.target_l0 if o.target_l0 is not None else base.get("target_l0")
        return TrainConfig(arch=o.arch, expansion=o.expansion or base.get("expansion", 64), l1_coeff=o.l1,
                           steps=steps, batch_size=batch, lr=o.lr or base.get("lr", TrainConfig.lr), seed=o.seed,
                           device=o.device, log_every=max(1, min(100, steps)), checkpoint_every=max(steps, 1),
                           target_l0=target or None)

    def _stage(self, ctx, kind: str, key: dict[str, Any]) -> Path:
        return Path(ctx.cache_dir) / "saerad" / f"{kind}-{_fingerprint(key)}"

    def _get_sae(self, ctx, tokens: np.ndarray, data_key: dict[str, Any]) -> None:
        from saerad.sae import Trainer, load_sae
        from saerad.sae.checkpoint import WEIGHTS_FILE, read_config, weights_step

        if self.opts.sae:
            d = Path(self.opts.sae).expanduser()
            self.sae = load_sae(d, device=self.opts.device)
            self.sae_dir, self.sae_id = d, _file_hash(d / WEIGHTS_FILE)
            self.index_dir = self._stage(ctx, "index", {**data_key, "sae": self.sae_id, "k": self.opts.top_k})
            self.train_info = {"source": "loaded", "dir": str(d)}
            return
        cfg = self._recipe(ctx, len(tokens))
        recipe = {k: v for k, v in cfg.to_dict().items() if k not in ("device", "log_every", "checkpoint_every")}
        d = self._stage(ctx, "sae", {**data_key, "recipe": recipe})
        done = (d / WEIGHTS_FILE).exists() and weights_step(d) == cfg.steps \
            and read_config(d).get("train_config", {}).get("steps") == cfg.steps
        t0 = time.perf_counter()
        if done:
            log.info("saerad: reusing the SAE trained in %s", d)
            self.sae = load_sae(d, device=self.opts.device)
        else:
            log.info("saerad: training a %s SAE (x%d, lambda %g, %d steps of %d) on %d tokens into %s",
                     cfg.arch, cfg.expansion, cfg.l1_coeff, cfg.steps, cfg.batch_size, len(tokens), d)
            trainer = Trainer(cfg, tokens, d)
            self.sae = trainer.train()
            last = trainer.history[-1] if trainer.history else {}
            log.info("saerad: SAE trained: L0 %.1f, explained variance %.3f (last batch)",
                     last.get("l0", float("nan")), last.get("explained_variance", float("nan")))
        ctx.timings["saerad_sae_s"] = time.perf_counter() - t0
        self.sae_dir, self.sae_id = d, _file_hash(d / WEIGHTS_FILE)
        # The index of an SAE we trained lives beside its checkpoint.
        self.index_dir = d if self.opts.top_k == 10 else self._stage(
            ctx, "index", {**data_key, "sae": self.sae_id, "k": self.opts.top_k})
        self.train_info = {"source": "trained", "dir": str(d), "recipe": recipe}

    def _get_index(self, ctx, tokens: np.ndarray, samples: Sequence[Sample], data_key: dict[str, Any]):
        from saerad.features.index import build_index, index_exists, load_index, read_index_meta

        assert self.index_dir is not None
        want = {"sae": self.sae_id, "data": data_key, "k": self.opts.top_k}
        if index_exists(self.index_dir) and read_index_meta(self.index_dir).get("inputs") == want:
            return load_index(self.index_dir)
        t0 = time.perf_counter()
        idx = build_index(self.sae, tokens, samples, k=self.opts.top_k, chunk_size=self.opts.chunk_size,
                          device=self.opts.device, meta={"inputs": want, "sae_dir": str(self.sae_dir)})
        idx.save(self.index_dir)
        ctx.timings["saerad_index_s"] = time.perf_counter() - t0
        return idx

    def _get_labels(self, ctx, index, samples: Sequence[Sample]) -> None:
        from saerad.features.label import (DEFAULT_PROMPT, MIN_SUPPORT, LexicalLabeller, LLMLabeller, label_index,
                                           load_labels, save_labels, status_counts)

        if self.opts.labels:
            self.labels_path = Path(self.opts.labels).expanduser()
            self.labels = load_labels(self.labels_path)
            self.label_counts = status_counts(self.labels.values())
            return
        client = self._llm(ctx)
        prompt = Path(self.opts.label_prompt or DEFAULT_PROMPT)
        if client is None:
            key = {"method": "lexical", "min_support": MIN_SUPPORT, "prior": 0.5, "version": 1}
        else:
            # version 2: follow-up turns repeat only the end of the reply; a failed follow-up
            # leaves the feature unlabelled rather than "error". 3: copies of the prompts'
            # example answers are not labels.
            key = {"method": "llm", "llm": self.opts.llm, "model": self.opts.model, "prompt": prompt.read_text(),
                   "retries": self.opts.label_retries, "version": 3}
        assert self.index_dir is not None
        path = self.index_dir / f"labels-{_fingerprint({**key, 'index': index.meta.get('inputs')})}.json"
        if path.exists():
            self.labels_path, self.labels = path, load_labels(path)
        else:
            t0 = time.perf_counter()
            if client is None:
                labeller: Any = LexicalLabeller([s.findings for s in samples])
            else:
                labeller = LLMLabeller(client, prompt, retries=self.opts.label_retries)
            # Features that never fired have no examples; label only the others (cheaper with
            # an LLM, and their records say "no_examples").
            before = client.usage.as_dict() if client is not None else {}
            records = label_index(index, labeller)
            if client is not None:
                self.llm_stages["label"] = {"features_asked": sum(r.status != "no_examples" for r in records),
                                            **usage_delta(client.usage.as_dict(), before)}
            save_labels(path, records, meta={"method": labeller.method, **{k: v for k, v in key.items() if k != "prompt"},
                                             "prompt_file": str(prompt) if client is not None else None})
            ctx.timings["saerad_label_s"] = time.perf_counter() - t0
            self.labels_path, self.labels = path, {r.id: r for r in records}
        self.label_counts = status_counts(self.labels.values())
        log.info("saerad: labels %s (%s)", self.labels_path, self.label_counts)

    def fit(self, ctx) -> None:
        train = ctx.dataset("train")
        if not train.samples:
            raise DataError("the training split is empty; saerad needs training images and reports")
        from saerad.sae import SAEError

        try:  # the SAE library's own errors are the user's to fix: one line, exit 2
            self._check_sae_width(ctx)
            tokens = ctx.tokens(train.samples, "train")
            data_key = {"train": train.fingerprint, "encoder": ctx.encoder().fingerprint}
            torch.manual_seed(self.opts.seed)
            self._get_sae(ctx, tokens, data_key)
        except SAEError as exc:
            raise BenchError(f"saerad: {exc}") from exc
        index = self._get_index(ctx, tokens, train.samples, data_key)
        self._get_labels(ctx, index, train.samples)
        self._calibrate(tokens, train.samples)
        ctx.used["saerad"] = self.config()

    def _check_sae_width(self, ctx) -> None:
        """A given SAE must read the encoder's tokens: said before any image is encoded."""
        if not self.opts.sae:
            return
        from saerad.sae.checkpoint import read_config

        d_in = read_config(Path(self.opts.sae).expanduser()).get("sae_config", {}).get("d_in")
        encoder = ctx.encoder()
        if d_in is not None and int(d_in) != encoder.dim:
            raise BenchError(f"saerad: the SAE in {self.opts.sae} reads {d_in}-d tokens, but encoder "
                             f"{ctx.encoder_name} gives {encoder.dim}-d CLS tokens; use an SAE trained on this "
                             "encoder's tokens (or leave out sae= to train one)")

    def _calibrate(self, tokens: np.ndarray, samples: Sequence[Sample]) -> None:
        self.thresholds = {}
        if self.opts.min_precision <= 0:
            return
        from saerad.calibration import learn_thresholds

        acts = self._activations(tokens)
        labels = {fid: r.label for fid, r in self.labels.items() if r.status == "labelled" and r.label}
        self.thresholds = learn_thresholds(acts, [s.findings for s in samples], labels, self.opts.min_precision)
        usable = sum(np.isfinite(t.activation) for t in self.thresholds.values())
        log.info("saerad: calibrated %d labels asserting findings on the training split: %d usable above a "
                 "threshold (precision >= %.2f), %d never reliable", len(self.thresholds), usable,
                 self.opts.min_precision, len(self.thresholds) - usable)

    def _activations(self, tokens: np.ndarray) -> np.ndarray:
        parts = list(self._activation_chunks(tokens))
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    @torch.no_grad()
    def _activation_chunks(self, tokens: np.ndarray) -> Iterator[np.ndarray]:
        """Feature activations f_i, `chunk_size` tokens at a time (never the whole dense matrix)."""
        for start in range(0, len(tokens), self.opts.chunk_size):
            z = torch.as_tensor(np.asarray(tokens[start:start + self.opts.chunk_size], dtype=np.float32),
                                device=self.opts.device)
            yield self.sae.feature_activations(z).cpu().numpy()

    # -- inference ----------------------------------------------------------------------
    def active_features(self, tokens: np.ndarray) -> list[list[Any]]:
        """The ActiveFeature lists (strongest first) of each token."""
        from saerad.compose.llm_free import ActiveFeature

        out = []
        for f in self._activation_chunks(tokens):
            for row in f:
                ids = np.flatnonzero(row > self.opts.tau)
                ids = ids[np.argsort(-row[ids], kind="stable")]
                if self.opts.max_features is not None:
                    ids = ids[: self.opts.max_features]
                top = float(row[ids[0]]) if len(ids) else 1.0
                feats = []
                for i in ids:
                    rec = self.labels.get(int(i))
                    desc = rec.label if rec is not None and rec.status == "labelled" and rec.label else None
                    limit = self.thresholds.get(int(i))
                    if limit is not None and row[i] < limit.activation:
                        desc = None  # the label is not reliable at this strength: not asserted
                    feats.append(ActiveFeature(int(i), float(row[i]), float(row[i]) / top, desc))
                out.append(feats)
        return out

    def generate(self, samples: Sequence[Query], ctx) -> Iterator[Prediction]:
        if self.sae is None:
            raise BenchError("saerad: fit() must run before generate()")
        from saerad.compose.llm import LLMComposer
        from saerad.compose.llm_free import compose_llm_free

        def compose(fs):
            return compose_llm_free(fs, self.opts.max_sentences, self.opts.min_score, self.opts.pool)

        client = self._llm(ctx)
        before = client.usage.as_dict() if client is not None else {}
        fallbacks = 0
        composer = None if client is None else LLMComposer(
            client, self.opts.compose_prompt, indication=self.opts.indication, priors=self.opts.priors,
            fallback=compose)
        # Batches keep LLM calls concurrent while predictions still stream to disk (resume).
        batch = 64
        for start in range(0, len(samples), batch):
            chunk = list(samples[start:start + batch])
            tokens = ctx.tokens(chunk, chunk[0].split)
            feats = self.active_features(tokens)
            if composer is None:
                comps = [compose(fs) for fs in feats]
            else:
                comps = composer.compose_many(list(zip(chunk, feats)))
                fallbacks += sum(c.method != "llm" for c in comps)
            for s, fs, comp in zip(chunk, feats, comps):
                yield Prediction(s.id, comp.text, {
                    "composer": comp.method,
                    # An LLM composer that failed for this report: the text is the LLM-free one.
                    "fallback": composer is not None and comp.method != "llm",
                    "tau": self.opts.tau,
                    "n_active": len(fs),
                    "active_features": [f.to_json() for f in fs],
                    "sentences": comp.sentences,
                    "dropped": comp.dropped,
                })
        if client is not None:
            # fallbacks: reports whose LLM reply was empty or failed (LLM-free text instead).
            self.llm_stages["compose"] = {"reports": len(samples), "fallbacks": fallbacks,
                                          **usage_delta(client.usage.as_dict(), before)}
            ctx.used.setdefault("llm", {})["saerad"] = {**client.manifest(), "stages": self.llm_stages}

    @classmethod
    def compute_parts(cls, manifest: dict[str, Any]) -> list[Any]:
        """The SAE of a run, for `bench compute`: all its parameters are trained; per report it
        computes one token's feature activations; training is its loss and backward on one batch
        times the steps in its checkpoint. Counted on the meta device, from the checkpoint's
        config alone (no weights are read, nothing is computed)."""
        from bench.compute import Part, count_flops
        from saerad.sae.base import get_architecture
        from saerad.sae.checkpoint import read_config

        sae_dir = (manifest.get("system") or {}).get("sae_dir")
        if not sae_dir:
            raise BenchError("the run's manifest names no SAE checkpoint (system.sae_dir)")
        try:
            config = read_config(sae_dir)
        except Exception as e:  # the SAE library's own errors are not BenchErrors
            raise BenchError(f"cannot read the run's SAE checkpoint {sae_dir}: {e}") from e
        arch = get_architecture(config["arch"])
        with torch.device("meta"):
            sae = arch(arch.config_class.from_dict(config["sae_config"]))
        d_in = sae.config.d_in
        train = config.get("train_config") or {}
        steps, batch = int(train.get("steps") or config.get("step") or 0), int(train.get("batch_size") or 0)

        def step() -> None:
            sae.forward_losses(torch.empty(batch, d_in, device="meta"), float(train.get("l1_coeff", 0.0)))["loss"] \
                .backward()

        with torch.no_grad():
            infer = count_flops(lambda: sae.feature_activations(torch.empty(1, d_in, device="meta")))
        per_step = count_flops(step) if batch else 0
        params = sum(p.numel() for p in sae.parameters())
        note = f"SAE {config['arch']} {d_in}->{sae.config.d_sae}: {steps:,} steps of {batch:,}"
        if train.get("target_l0"):
            note += " (the target-L0 calibration trials before them are not counted)"
        return [Part("sae", params, params, float(infer), float(per_step) * steps, note)]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "sae_dir": str(self.sae_dir) if self.sae_dir else None,
                "sae_fingerprint": self.sae_id, "train": self.train_info,
                "index_dir": str(self.index_dir) if self.index_dir else None,
                "labels": str(self.labels_path) if self.labels_path else None, "label_counts": self.label_counts,
                "calibration": {"min_precision": self.opts.min_precision, "labels_asserting": len(self.thresholds),
                                "usable": int(sum(np.isfinite(t.activation) for t in self.thresholds.values()))}}
