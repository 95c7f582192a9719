"""Finding model files on the Hugging Face hub without waiting on a dead network.

huggingface_hub retries a failed request for tens of seconds. Metrics check their weights
before a run, so on an offline machine that would cost half a minute per metric per run
for an answer known at once. `hub_file` looks in the cache first, then downloads only
when HF_HUB_OFFLINE is unset and the endpoint accepts a connection within a few seconds.
"""

from __future__ import annotations

import logging
import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from bench.options import TRUE_WORDS

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 3.0


def offline() -> bool:
    # Read at call time (huggingface_hub reads it once, at import).
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_WORDS


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within `timeout_s`."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return _reachable(url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80), timeout_s)


@lru_cache(maxsize=8)
def _reachable(host: str, port: int, timeout_s: float) -> bool:
    # Cached per process: one probe serves every metric of a run.
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def hub_file(repo: str, filename: str, cache_dir: Path | None = None) -> Path | None:
    """A file from the HF cache, else downloaded when possible; None if neither works."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
    if isinstance(cached, str):
        return Path(cached)
    if offline() or not hub_reachable():
        return None
    try:
        return Path(hf_hub_download(repo, filename, cache_dir=cache_dir))
    except Exception as exc:  # network, moved repo, full disk: all mean "unavailable"
        log.warning("could not download %s/%s: %s", repo, filename, exc)
        return None


def require_hub_file(repo: str, filename: str, cache_dir: Path | None, what: str, env_var: str) -> Path:
    """`hub_file`, or MetricUnavailable naming the file, why it is missing and the two remedies."""
    from bench.errors import MetricUnavailable

    found = hub_file(repo, filename, cache_dir)
    if found is None:
        where = "offline" if offline() else "the download failed"
        raise MetricUnavailable(f"{what} {filename} not found in the HF cache and {where}",
                                f"download with `hf download {repo} {filename}` or set {env_var}")
    return found
