"""Which HTTP client library to use: `httpx2` where installed (the successor of httpx,
and what the current `anthropic` SDK and huggingface_hub depend on), else `httpx`.
Both have the same API; one module serves the OpenAI-compatible backend and the tests."""

from __future__ import annotations

from types import ModuleType

from bench.errors import ModelUnavailableError


def httpx_module() -> ModuleType:
    try:
        import httpx2

        return httpx2
    except ImportError:
        pass
    try:
        import httpx

        return httpx
    except ImportError as e:
        raise ModelUnavailableError("the LLM client needs an HTTP library: pip install httpx2 "
                                    "(or httpx)") from e
