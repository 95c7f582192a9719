"""The embedded default dataset: a phantom MIMIC-CXR-JPG tree generated on first use.

With no --data-root, the harness runs on this so that a newcomer with no credentials, no
GPU and no network gets a complete run. It is regenerated only when its parameters or the
generator version change; a marker file written last makes an interrupted generation
start over instead of being used half-written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhantomDefault:
    n_train: int = 2000
    n_test: int = 400
    seed: int = 0

    def dirname(self) -> str:
        # The generator's version is part of the name: a new generator never reuses old images.
        from bench.data.phantom.generate import GENERATOR_VERSION

        return f"phantom-v{GENERATOR_VERSION}-n{self.n_train}-t{self.n_test}-s{self.seed}"


def cache_root() -> Path:
    """The default cache root: generated data, token caches, labels, annotations, LLM answers.

    Commands pass the root they were given (--cache-dir) down through the run context; this
    default is used only where none was given."""
    return Path(os.environ.get("SAERAD_BENCH_CACHE", Path.home() / ".cache" / "saerad-bench"))


def embedded_default_root(cache_dir: Path | None = None, spec: PhantomDefault = PhantomDefault()) -> Path:
    from bench.data.phantom import generate

    root = (cache_dir or cache_root()) / "datasets" / spec.dirname()
    marker = root / ".complete.json"
    if marker.exists():
        return root
    if root.exists():  # left over from an interrupted generation
        shutil.rmtree(root)
    log.info("generating the embedded phantom dataset in %s (first use only)", root)
    generate(root, n_train=spec.n_train, n_test=spec.n_test, seed=spec.seed, progress=True)
    marker.write_text(json.dumps(asdict(spec)))
    return root
