"""Running the RadGraph model: where it lives, how it is called, and its annotation cache.

The model is run by the radgraph package itself (pinned to rewards.PINNED_VERSION), always
in a child process that executes worker.py (a JSON-file-in, JSON-file-out protocol; see that
file). The child's interpreter is, first match wins:
  1. the `python` option, 2. $SAERAD_RADGRAPH_PYTHON (an environment made for RadGraph, the
  external-process mechanism), 3. bench's own interpreter if radgraph is installed in it.
radgraph 0.1.18 does import next to transformers 5.x, but it declares transformers>=4.39 and
was written against 4.x; a separate environment is the supported set-up. Running even our
own interpreter as a child keeps radgraph's global side effects (it prints to stdout and
resets warning filters) out of the harness and hands its GPU memory back when done.

The weights are the radgraph archives in the Hugging Face repo StanfordAIMI/RRG_scorers
(`<model_type>.tar.gz`). First match wins: the `model_path` option, $SAERAD_RADGRAPH_MODEL
(the .tar.gz or its unpacked directory), the Hugging Face cache, a download (not when
HF_HUB_OFFLINE is set or the hub does not answer within a few seconds). Archives are unpacked
once under <cache>/radgraph/models/<fingerprint>/. The model's BERT encoder and tokenizer are
loaded by name (from its config.json) through the Hugging Face cache as well.

Annotations are cached in SQLite (<cache>/radgraph/annotations.sqlite) keyed by the model
fingerprint and the SHA-256 of the text, and committed chunk by chunk, so a reference set is
annotated once for all systems and a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench.errors import MetricUnavailable
from bench.hub import hub_reachable, offline, require_hub_file
from bench.metrics.radgraph.rewards import PINNED_VERSION, AnnotationError
from bench.metrics.text_cache import TextCache, file_sha256, text_key
from bench.metrics.worker_process import run_json_worker

log = logging.getLogger(__name__)

WEIGHTS_REPO = "StanfordAIMI/RRG_scorers"
MODEL_TYPES = ("radgraph", "radgraph-xl", "modern-radgraph-xl")  # chest X-ray models of radgraph 0.1.18
DEFAULT_MODEL_TYPE = "radgraph-xl"  # F1RadGraph's default in radgraph 0.1.x
PYTHON_ENV = "SAERAD_RADGRAPH_PYTHON"
MODEL_ENV = "SAERAD_RADGRAPH_MODEL"
WORKER = Path(__file__).with_name("worker.py")
PROTOCOL = 1
# radgraph 0.1.18 breaks with transformers 5 (docs/metrics-rger.md), and pip would pick the newest
INSTALL_REQUIREMENTS = f'"radgraph=={PINNED_VERSION}" "transformers>=4.39,<5" "torch>=2.1"'
INSTALL_HINT = (f"make an environment with `python -m venv ~/radgraph-env && ~/radgraph-env/bin/pip install "
                f"{INSTALL_REQUIREMENTS}` and set {PYTHON_ENV}=~/radgraph-env/bin/python "
                f"(docs/metrics-rger.md)")


def default_cache_dir() -> Path:
    from bench.data.default import cache_root

    return cache_root() / "radgraph"


# -- the annotator environment --------------------------------------------------------

@dataclass(frozen=True)
class AnnotatorEnv:
    python: str
    radgraph_version: str
    source: str  # where the interpreter came from, for messages and the manifest


def find_env(python: str | None = None, timeout_s: float = 60.0) -> AnnotatorEnv:
    """The interpreter that runs worker.py, with the pinned radgraph; else MetricUnavailable."""
    explicit = python or os.environ.get(PYTHON_ENV)
    if explicit:
        source = "python option" if python else f"${PYTHON_ENV}"
        exe = Path(explicit).expanduser()
        if not exe.is_file() or not os.access(exe, os.X_OK):
            raise MetricUnavailable(f"RadGraph interpreter {exe} (from {source}) is not an executable file",
                                    INSTALL_HINT)
        probe = "import importlib.metadata as m; print(m.version('radgraph'))"
        try:
            done = subprocess.run([str(exe), "-c", probe], capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MetricUnavailable(f"could not run RadGraph interpreter {exe} (from {source}): {exc}",
                                    INSTALL_HINT) from exc
        if done.returncode != 0:
            raise MetricUnavailable(f"radgraph is not installed for {exe} (from {source})", INSTALL_HINT)
        version, python_path = done.stdout.strip(), str(exe)
    else:
        source = "bench's own interpreter"
        try:
            version = importlib.metadata.version("radgraph")
        except importlib.metadata.PackageNotFoundError:
            raise MetricUnavailable("the radgraph package is not installed and no RadGraph environment is set",
                                    INSTALL_HINT) from None
        python_path = sys.executable
    if version != PINNED_VERSION:
        # Scores changed between radgraph releases: refuse rather than mix versions.
        raise MetricUnavailable(f"radgraph {version} found ({source}), but RGER is pinned to {PINNED_VERSION}",
                                f"install {INSTALL_REQUIREMENTS} in that environment")
    return AnnotatorEnv(python_path, version, source)


# -- the model archive ----------------------------------------------------------------

def locate_archive(model_type: str, model_path: str | Path | None = None,
                   hf_cache_dir: Path | None = None) -> Path:
    """The model's .tar.gz or unpacked directory, or MetricUnavailable saying how to get it."""
    if model_type not in MODEL_TYPES:
        raise MetricUnavailable(f"unknown RadGraph model type {model_type!r}",
                                f"use one of {', '.join(MODEL_TYPES)}")
    explicit = model_path or os.environ.get(MODEL_ENV)
    if explicit:
        source = "model_path option" if model_path else f"${MODEL_ENV}"
        path = Path(explicit).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise MetricUnavailable(f"RadGraph model directory {path} (from {source}) has no config.json",
                                        f"point {source} at an unpacked {model_type}.tar.gz or the archive itself")
            return path
        if not path.is_file():
            raise MetricUnavailable(f"RadGraph model not found at {path} (from {source})",
                                    f"point {source} at {model_type}.tar.gz from {WEIGHTS_REPO} or its unpacked "
                                    f"directory")
        return path
    return require_hub_file(WEIGHTS_REPO, f"{model_type}.tar.gz", hf_cache_dir, "RadGraph weights", MODEL_ENV)


def model_fingerprint(archive: Path, model_type: str) -> str:
    """Identifies the annotating model: radgraph version, model type and the weights' bytes.

    The content hash is bench.metrics.text_cache.file_sha256 (free for Hugging Face cache blobs).
    """
    if archive.is_dir():
        parts = [file_sha256(archive / "config.json")]
        if (archive / "weights.th").is_file():
            parts.append(file_sha256(archive / "weights.th"))
        content = hashlib.sha256("".join(parts).encode()).hexdigest()
    else:
        content = file_sha256(archive)
    return hashlib.sha256(f"radgraph=={PINNED_VERSION}|{model_type}|{content}".encode()).hexdigest()[:24]


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    for member in tar.getmembers():
        target = (dest / member.name).resolve()
        if not str(target).startswith(str(dest.resolve())) or member.issym() or member.islnk():
            raise MetricUnavailable(f"RadGraph archive member {member.name!r} would escape {dest}",
                                    f"re-download the archive from {WEIGHTS_REPO}")
    tar.extractall(dest)


def unpack(archive: Path, model_type: str, fingerprint: str, cache_dir: Path) -> Path:
    """A directory D such that D/<model_type>/config.json is the model (radgraph's layout).

    Pass D to radgraph as `model_cache_dir`; it then loads the model without downloading.
    """
    root = cache_dir / "models" / fingerprint
    model_dir = root / model_type
    if (model_dir / "config.json").is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    if archive.is_dir():
        if model_dir.is_symlink() or model_dir.exists():
            model_dir.unlink()
        model_dir.symlink_to(archive.resolve(), target_is_directory=True)
        return root
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=root))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            _safe_extract(tar, staging)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise MetricUnavailable(f"could not unpack RadGraph archive {archive}: {exc}",
                                f"re-download {model_type}.tar.gz from {WEIGHTS_REPO}") from exc
    # The archives hold config.json at the top; accept one wrapping directory as well.
    top = staging
    if not (top / "config.json").is_file():
        subdirs = [p for p in staging.iterdir() if p.is_dir()]
        if len(subdirs) == 1 and (subdirs[0] / "config.json").is_file():
            top = subdirs[0]
        else:
            raise MetricUnavailable(f"RadGraph archive {archive} holds no config.json",
                                    f"re-download {model_type}.tar.gz from {WEIGHTS_REPO}")
    try:
        os.replace(top, model_dir)
    except OSError:
        # Another process unpacked the same archive meanwhile: use its copy.
        if not (model_dir / "config.json").is_file():
            raise
    shutil.rmtree(staging, ignore_errors=True)
    log.info("unpacked %s into %s", archive, model_dir)
    return root


def encoder_name(model_dir: Path) -> str | None:
    """The Hugging Face id of the BERT encoder a RadGraph model loads by name."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
        return config["model"]["embedder"]["token_embedders"]["bert"]["model_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_encoder(name: str | None, hf_cache_dir: Path | None = None) -> None:
    """MetricUnavailable if the encoder can be neither read from the cache nor downloaded."""
    if not name or Path(name).expanduser().is_dir():
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", cache_dir=hf_cache_dir), str):
        return
    if offline() or not hub_reachable():
        raise MetricUnavailable(f"RadGraph's encoder {name} is not in the Hugging Face cache and the hub is "
                                "not reachable",
                                f"download it with `hf download {name}` where the hub is reachable")


# -- the annotator --------------------------------------------------------------------

EMPTY_ANNOTATION: dict[str, Any] = {"text": "", "entities": {}}


@dataclass(frozen=True)
class AnnotatorConfig:
    model_type: str = DEFAULT_MODEL_TYPE
    model_path: str | None = None  # .tar.gz or unpacked directory; else $SAERAD_RADGRAPH_MODEL, HF cache
    python: str | None = None  # interpreter with radgraph; else $SAERAD_RADGRAPH_PYTHON, our own
    device: str = "auto"  # auto | cpu | cuda | cuda:N (in the child process)
    cache_dir: str | None = None  # default <SAERAD_BENCH_CACHE>/radgraph
    hf_cache_dir: str | None = None  # Hugging Face cache; default huggingface_hub's
    chunk: int = 256  # texts per child process call; each chunk is committed to the cache
    timeout_s: float | None = None  # per chunk; None: no limit

    def __post_init__(self):
        # Options may arrive as strings from the command line.
        object.__setattr__(self, "chunk", int(self.chunk))
        if self.timeout_s is not None:
            object.__setattr__(self, "timeout_s", float(self.timeout_s))
        if self.chunk < 1:
            raise ValueError(f"rger chunk must be >= 1, got {self.chunk}")


@dataclass(frozen=True)
class _Resolved:
    env: AnnotatorEnv
    archive: Path
    fingerprint: str
    model_cache_dir: Path


class RadGraphAnnotator:
    """Texts -> RadGraph annotations (radgraph's per-report dicts), cached on disk."""

    def __init__(self, config: AnnotatorConfig = AnnotatorConfig()):
        self.config = config
        self.cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
        self._hf_cache = Path(config.hf_cache_dir).expanduser() if config.hf_cache_dir else None
        self._resolved: _Resolved | None = None

    def resolve(self) -> _Resolved:
        """Find the environment and the model (unpacking it once); MetricUnavailable if missing."""
        if self._resolved is None:
            cfg = self.config
            env = find_env(cfg.python)
            archive = locate_archive(cfg.model_type, cfg.model_path, self._hf_cache)
            fingerprint = model_fingerprint(archive, cfg.model_type)
            root = unpack(archive, cfg.model_type, fingerprint, self.cache_dir)
            check_encoder(encoder_name(root / cfg.model_type), self._hf_cache)
            self._resolved = _Resolved(env, archive, fingerprint, root)
        return self._resolved

    def fingerprint(self) -> str:
        return self.resolve().fingerprint

    def annotate(self, texts: Sequence[str]) -> list[dict]:
        """One annotation per text, in order. Blank texts get no entities without a model call."""
        keys = [text_key(t) for t in texts]
        wanted = {k: t for k, t in zip(keys, texts) if t.strip()}
        out: dict[str, dict] = {}
        if wanted:
            resolved = self.resolve()
            with TextCache(self.cache_dir / "annotations.sqlite", "annotations", "annotation") as cache:
                out = cache.get_or_compute(resolved.fingerprint, wanted,
                                           lambda texts: self._run_worker(resolved, texts),
                                           self.config.chunk, "radgraph")
        return [out[k] if k in out else dict(EMPTY_ANNOTATION) for k in keys]

    def _run_worker(self, resolved: _Resolved, texts: list[str]) -> list[dict]:
        request = {"protocol": PROTOCOL, "model_type": self.config.model_type,
                   "model_cache_dir": str(resolved.model_cache_dir), "device": self.config.device,
                   "texts": texts}
        return run_worker(resolved.env.python, request, timeout_s=self.config.timeout_s)


def run_worker(python: str, request: dict, timeout_s: float | None = None, worker: Path = WORKER) -> list[dict]:
    """Run worker.py under `python` on one request; the annotations, validated, in text order."""
    texts = request["texts"]
    response, seconds = run_json_worker(python, worker, request, AnnotationError, "RadGraph annotator",
                                        f"{len(texts)} texts", timeout_s,
                                        "raise the rger timeout_s option or lower chunk")
    log.info("radgraph annotated %d texts in %.1f s", len(texts), seconds)
    return _validated(response, texts)


def _validated(response: Any, texts: list[str]) -> list[dict]:
    if not isinstance(response, dict) or response.get("protocol") != PROTOCOL:
        raise AnnotationError(f"RadGraph annotator answered with protocol "
                              f"{response.get('protocol') if isinstance(response, dict) else None!r}, "
                              f"expected {PROTOCOL}")
    if response.get("radgraph_version") != PINNED_VERSION:
        raise AnnotationError(f"RadGraph annotator ran radgraph {response.get('radgraph_version')!r}, "
                              f"expected {PINNED_VERSION}")
    annotations = response.get("annotations")
    if not isinstance(annotations, list) or len(annotations) != len(texts):
        raise AnnotationError(f"RadGraph annotator returned "
                              f"{len(annotations) if isinstance(annotations, list) else 'no'} annotations "
                              f"for {len(texts)} texts")
    errors = response.get("errors") or {}
    failed = [int(i) for i in errors] + [i for i, a in enumerate(annotations) if a is None and str(i) not in errors]
    if failed:
        first = min(failed)
        raise AnnotationError(f"RadGraph could not annotate {len(failed)} of {len(texts)} texts; the first "
                              f"(#{first}, {texts[first][:80]!r}): {errors.get(str(first), 'no annotation')}")
    for i, a in enumerate(annotations):
        if not isinstance(a, dict) or not isinstance(a.get("entities"), dict):
            raise AnnotationError(f"RadGraph annotation #{i} has no 'entities' mapping: {str(a)[:200]}")
    return annotations
