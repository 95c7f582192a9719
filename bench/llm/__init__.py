"""The LLM client layer shared by SAE-Rad (feature labelling, report composition) and RadFact.

Backends: OpenAI-compatible servers (vLLM, llama.cpp, OpenAI), Anthropic, and a local GGUF
model, plus any a package registers (entry-point group saerad_bench.llm_backends).
`LLMClient` adds a SQLite response cache, a concurrency limit, retries and a `probe()`
that says, before any real request, whether the backend can answer.
See docs/llm.md.
"""

from bench.llm.base import (ChatRequest, ChatResponse, LLMBackend, LLMDeadlineExceeded, LLMEndpointDown, LLMError,
                            LLMOutputError, LLMRefusal, LLMRequestError, LLMTransientError, LLMUnavailable, Usage)
from bench.llm.cache import CacheCorruptError, ResponseCache, cache_key
from bench.llm.client import LLMClient
from bench.llm.jsonx import extract_json
from bench.llm.spec import LLMSpec, make_client, parse_spec

__all__ = ["CacheCorruptError", "ChatRequest", "ChatResponse", "LLMBackend", "LLMClient", "LLMDeadlineExceeded",
           "LLMEndpointDown", "LLMError", "LLMOutputError", "LLMRefusal", "LLMRequestError", "LLMTransientError", "LLMUnavailable", "LLMSpec", "ResponseCache", "Usage", "cache_key",
           "extract_json", "make_client", "parse_spec"]
