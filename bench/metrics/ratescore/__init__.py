"""RaTEScore (Zhao et al. 2024; metric "ratescore"): entity-aware similarity of two radiology reports.

The released scorer is the `RaTEScore` package (PyPI `ratescore`, pinned to PINNED_VERSION): its
NER model (Angelakeke/RaTE-NER-Deberta, DeBERTa-v3 token classification) finds medical entities
of five types in each sentence (sentences split by medspacy), its embedding model
(FremyCompany/BioLORD-2023-C) embeds each entity, every entity is matched to its most similar
entity of the other report, and the matches are weighted by an entity-type affinity matrix and a
penalty for negation mismatches; per pair, an F1 of the two directions, 0.5 when either side has
no entity. The corpus value is the mean over pairs. We run the package itself, as RGER runs
radgraph: in a child process (worker.py), in an environment of its own, because it needs
medspacy and was written for transformers 4. The child's interpreter, first match wins: the
`python` option, $SAERAD_RATESCORE_PYTHON, bench's own interpreter if the package is installed.

Models: the `ner_model` / `eval_model` options or $SAERAD_RATESCORE_NER_MODEL /
$SAERAD_RATESCORE_EVAL_MODEL (local directories), else the Hugging Face cache or a download
(not when HF_HUB_OFFLINE is set); the child gets local directories and downloads nothing.

Scores are cached per pair in <cache>/ratescore/pairs.sqlite, keyed by a fingerprint of both
models, the package version and settings, and the two texts; a re-score computes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from pydantic import Field

from bench.errors import BenchError, MetricUnavailable
from bench.metrics.means import MeanScoresMetric
from bench.metrics.text_cache import TextCache, file_sha256, text_key
from bench.metrics.worker_process import run_json_worker
from bench.options import OptionsModel

log = logging.getLogger(__name__)

PINNED_VERSION = "0.6.0"
NER_REPO = "Angelakeke/RaTE-NER-Deberta"
EVAL_REPO = "FremyCompany/BioLORD-2023-C"
PYTHON_ENV = "SAERAD_RATESCORE_PYTHON"
NER_ENV = "SAERAD_RATESCORE_NER_MODEL"
EVAL_ENV = "SAERAD_RATESCORE_EVAL_MODEL"
WORKER = Path(__file__).with_name("worker.py")
PROTOCOL = 1
INSTALL_HINT = (f"make an environment with `python -m venv ~/ratescore-env && ~/ratescore-env/bin/pip install "
                f"ratescore=={PINNED_VERSION} medspacy 'pandas<2.3' 'numpy<2' 'transformers<5' torch sentencepiece` and set "
                f"{PYTHON_ENV}=~/ratescore-env/bin/python (docs/metrics-text-similarity.md)")
HUB_FILES = ["config.json", "*.safetensors", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "spm.model", "added_tokens.json"]


class RaTEScoreError(BenchError):
    """The RaTEScore worker failed or answered outside the protocol."""


def find_python(python: str | None = None, timeout_s: float = 120.0) -> tuple[str, str]:
    """(interpreter, where it came from) that imports the pinned RaTEScore; else MetricUnavailable."""
    explicit = python or os.environ.get(PYTHON_ENV)
    if not explicit:
        import importlib.metadata

        try:
            version = importlib.metadata.version("RaTEScore")
        except importlib.metadata.PackageNotFoundError:
            raise MetricUnavailable("the RaTEScore package is not installed and no RaTEScore environment is set",
                                    INSTALL_HINT) from None
        exe, source = sys.executable, "bench's own interpreter"
    else:
        source = "python option" if python else f"${PYTHON_ENV}"
        exe = str(Path(explicit).expanduser())
        if not (Path(exe).is_file() and os.access(exe, os.X_OK)):
            raise MetricUnavailable(f"RaTEScore interpreter {exe} (from {source}) is not an executable file",
                                    INSTALL_HINT)
        probe = "import importlib.metadata as m; print(m.version('RaTEScore'))"
        try:
            done = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MetricUnavailable(f"could not run RaTEScore interpreter {exe} (from {source}): {exc}",
                                    INSTALL_HINT) from exc
        if done.returncode != 0:
            raise MetricUnavailable(f"RaTEScore is not installed for {exe} (from {source})", INSTALL_HINT)
        version = done.stdout.strip()
    if version != PINNED_VERSION:
        raise MetricUnavailable(f"RaTEScore {version} found ({source}), but ratescore is pinned to {PINNED_VERSION}",
                                f"install ratescore=={PINNED_VERSION} in that environment")
    return exe, source


def locate_model(what: str, repo: str, explicit: str | None, env_var: str, hf_cache_dir: Path | None) -> Path:
    """A local directory of one of RaTEScore's models, or MetricUnavailable saying how to provide it."""
    given = explicit or os.environ.get(env_var)
    if given:
        path = Path(given).expanduser()
        if not (path / "config.json").is_file():
            raise MetricUnavailable(f"RaTEScore {what} model directory {path} has no config.json",
                                    f"point {env_var} (or the option) at a Hugging Face model directory")
        return path
    from huggingface_hub import snapshot_download

    from bench.hub import hub_reachable, offline

    local_only = offline() or not hub_reachable()
    try:
        return Path(snapshot_download(repo, cache_dir=hf_cache_dir, allow_patterns=HUB_FILES,
                                      local_files_only=local_only))
    except Exception:  # not cached and no network, or the download failed
        where = "offline" if offline() else ("the hub is not reachable" if local_only else "the download failed")
        raise MetricUnavailable(f"RaTEScore {what} model {repo} is not in the Hugging Face cache and {where}",
                                f"download it with `hf download {repo}` or set {env_var}") from None


def directory_fingerprint(path: Path) -> str:
    parts = [f"{f.name}:{file_sha256(f)}" for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def run_worker(python: str, request: dict, timeout_s: float | None = None, worker: Path = WORKER) -> list[float]:
    """One request through worker.py under `python`; the scores, validated, in pair order."""
    pairs = request["pairs"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # local directories only
    response, seconds = run_json_worker(python, worker, request, RaTEScoreError, "RaTEScore worker",
                                        f"{len(pairs)} pairs", timeout_s,
                                        "raise the ratescore timeout_s option or lower chunk", env)
    log.info("ratescore scored %d pairs in %.1f s", len(pairs), seconds)
    if not isinstance(response, dict) or response.get("protocol") != PROTOCOL:
        raise RaTEScoreError(f"RaTEScore worker answered outside protocol {PROTOCOL}")
    if response.get("ratescore_version") != PINNED_VERSION:
        raise RaTEScoreError(f"RaTEScore worker ran version {response.get('ratescore_version')!r}, expected "
                             f"{PINNED_VERSION}")
    scores = response.get("scores")
    if not isinstance(scores, list) or len(scores) != len(pairs) or \
            not all(isinstance(s, (int, float)) and np.isfinite(s) for s in scores):
        raise RaTEScoreError(f"RaTEScore worker returned {len(scores) if isinstance(scores, list) else 'no'} "
                             f"scores for {len(pairs)} pairs, or non-finite ones")
    return [float(s) for s in scores]


class RaTEScoreMetric(MeanScoresMetric):
    name = "ratescore"
    columns = ("ratescore",)
    headers = {"ratescore": "RaTEScore"}
    means = {"ratescore": "ratescore"}
    description = (f"RaTEScore (Zhao et al. 2024) by the RaTEScore package {PINNED_VERSION} in its own environment: "
                   f"NER {NER_REPO}, entity embeddings {EVAL_REPO}, affinity matrix 'long'; mean over samples")

    class Options(OptionsModel):
        python: str | None = None  # interpreter with ratescore; else $SAERAD_RATESCORE_PYTHON, our own
        ner_model: str | None = None  # local directory; else $SAERAD_RATESCORE_NER_MODEL, the HF cache
        eval_model: str | None = None  # local directory; else $SAERAD_RATESCORE_EVAL_MODEL, the HF cache
        affinity_matrix: str = "long"  # the package's default; "short" for short reports
        device: str = "cpu"  # cpu | cuda (in the worker)
        batch_size: int = Field(1, ge=1)  # the package's default: sentences per NER forward pass
        chunk: int = Field(512, ge=1)  # pairs per worker call; each chunk is committed to the cache
        timeout_s: float | None = None
        hf_cache_dir: str | None = None

    def __init__(self, python: str | None = None, ner_model: str | None = None, eval_model: str | None = None,
                 affinity_matrix: str = "long", device: str = "cpu", batch_size: int = 1, chunk: int = 512,
                 timeout_s: float | None = None, hf_cache_dir: str | None = None):
        self.python, self.ner_model, self.eval_model = python, ner_model, eval_model
        self.affinity_matrix, self.device = affinity_matrix, device
        self.batch_size, self.chunk = int(batch_size), int(chunk)
        self.timeout_s = float(timeout_s) if timeout_s is not None else None
        self.hf_cache_dir = Path(hf_cache_dir).expanduser() if hf_cache_dir else None
        self._resolved: tuple[str, Path, Path, str] | MetricUnavailable | None = None

    def resolve(self) -> tuple[str, Path, Path, str]:
        """(interpreter, NER model dir, embedding model dir, fingerprint); MetricUnavailable if missing."""
        if self._resolved is None:
            try:
                if self.affinity_matrix not in ("long", "short") and not Path(self.affinity_matrix).is_file():
                    raise MetricUnavailable(f"ratescore affinity_matrix={self.affinity_matrix!r} is neither long, "
                                            "short nor a file", "use long (the default), short or a JSON file")
                python, _ = find_python(self.python)
                ner = locate_model("NER", NER_REPO, self.ner_model, NER_ENV, self.hf_cache_dir)
                emb = locate_model("embedding", EVAL_REPO, self.eval_model, EVAL_ENV, self.hf_cache_dir)
                matrix = self.affinity_matrix if self.affinity_matrix in ("long", "short") \
                    else file_sha256(Path(self.affinity_matrix))
                key = "|".join([PINNED_VERSION, directory_fingerprint(ner), directory_fingerprint(emb), matrix,
                                str(self.batch_size)])
                self._resolved = (python, ner, emb, hashlib.sha256(key.encode()).hexdigest()[:24])
            except MetricUnavailable as exc:
                self._resolved = exc
        if isinstance(self._resolved, MetricUnavailable):
            raise self._resolved
        return self._resolved

    def check(self) -> None:
        self.resolve()

    def scores(self, references: Sequence[str], predictions: Sequence[str]) -> np.ndarray:
        python, ner, emb, fingerprint = self.resolve()
        keys = [text_key(text_key(r) + text_key(p)) for r, p in zip(references, predictions)]
        pairs = dict(zip(keys, zip(references, predictions)))

        def compute(batch: list[tuple[str, str]]) -> list[float]:
            request = {"protocol": PROTOCOL, "ner_model": str(ner), "eval_model": str(emb), "device": self.device,
                       "batch_size": self.batch_size, "affinity_matrix": self.affinity_matrix,
                       "pairs": [list(p) for p in batch]}
            return run_worker(python, request, self.timeout_s)

        with TextCache(self.resolved_cache_root() / "ratescore" / "pairs.sqlite", "pairs", "score") as cache:
            found = cache.get_or_compute(fingerprint, pairs, compute, self.chunk, "ratescore")
        return np.array([found[k] for k in keys], dtype=np.float64)

    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        if len(references) != len(predictions):
            raise ValueError(f"ratescore: {len(references)} references but {len(predictions)} predictions")
        return pd.DataFrame({"ratescore": self.scores(list(references), list(predictions))})

    def signature_settings(self) -> dict:
        return {"ratescore": PINNED_VERSION, "matrix": self.affinity_matrix if self.affinity_matrix in
                ("long", "short") else "file", "models": self.resolve()[3][:12]}

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(version=PINNED_VERSION, affinity_matrix=self.affinity_matrix, batch_size=self.batch_size)
        try:
            python, ner, emb, fingerprint = self.resolve()
            cfg.update(python=python, ner_model=str(ner), eval_model=str(emb), fingerprint=fingerprint)
        except MetricUnavailable:
            cfg.update(fingerprint=None)
        return cfg
