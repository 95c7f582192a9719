"""OpenAI-compatible chat completions (vLLM, llama.cpp's server, OpenAI itself, ...).

We talk to /v1/chat/completions with httpx2/httpx (bench.llm.http) rather than the
`openai` SDK: the SDK has retries of its own (they would hide attempts from our counters
and double the backoff), the HTTP library is already a dependency of the Anthropic SDK
and huggingface_hub, and a plain POST keeps the structured-output fallback and the
error mapping in view.

Several base URLs share the load: each attempt goes to the endpoint with the fewest
requests in flight (ties in turn), passing over one that failed in the last few seconds.

Structured output differs between servers. For a request with a JSON schema we try, per
endpoint and remembering what worked: OpenAI's {"type": "json_schema", ...} (OpenAI,
vLLM); then {"type": "json_object", "schema": ...} (llama.cpp's Python server); then no
response_format at all, leaving the JSON to be found in plain text (bench.llm.jsonx). We
step down only when the server rejects the request with a 400/422 (or, as llama-cpp-python
does for failed validation, a 500) whose body names response_format, so other bad
requests still fail at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

from bench.errors import BenchError
from bench.llm.base import ChatRequest, ChatResponse, LLMBackend, LLMRequestError, LLMTransientError
from bench.llm.http import httpx_module

log = logging.getLogger(__name__)

STRUCTURED_MODES = ("json_schema", "json_object", "none")
FAILED_ENDPOINT_PAUSE_S = 5.0


@dataclass
class _Endpoint:
    base_url: str
    in_flight: int = 0
    requests: int = 0  # HTTP requests sent, fallback probes included
    failures: int = 0
    paused_until: float = 0.0
    structured: str | None = None  # the structured-output mode learned for this server


class OpenAICompatBackend(LLMBackend):
    kind = "openai"

    def __init__(self, base_urls: Sequence[str], model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 structured_output: str = "auto", headers: dict[str, str] | None = None):
        if not base_urls:
            raise BenchError("an OpenAI-compatible backend needs at least one base URL, "
                             "e.g. http://localhost:8000/v1")
        if not model:
            raise BenchError("an OpenAI-compatible backend needs a model name (--model)")
        if structured_output != "auto" and structured_output not in STRUCTURED_MODES:
            raise BenchError(f"unknown structured_output {structured_output!r}; choose auto or one of "
                             f"{', '.join(STRUCTURED_MODES)}")
        self.endpoints = [_Endpoint(u.rstrip("/")) for u in base_urls]
        self.model = model
        self.api_key_env = api_key_env
        self.structured_output = structured_output
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        key = os.environ.get(api_key_env)
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        elif api_key_env != "OPENAI_API_KEY":
            # A variable the user named on purpose must exist; the default may be absent
            # (local vLLM and llama.cpp servers need no key).
            raise BenchError(f"the environment variable {api_key_env} (named as the API key) is not set")
        self._turn = 0
        self._http: Any = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    # -- plumbing ---------------------------------------------------------------
    def _client(self):
        httpx = httpx_module()
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            # httpx connection pools belong to one event loop; chat_many makes a new one.
            self._http = httpx.AsyncClient(headers=self._headers,
                                           limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
            self._http_loop = loop
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            try:
                await self._http.aclose()
            except RuntimeError:  # its loop is gone
                pass
            self._http, self._http_loop = None, None

    def _pick(self) -> _Endpoint:
        now = time.monotonic()
        healthy = [e for e in self.endpoints if e.paused_until <= now] or self.endpoints
        self._turn += 1
        n = len(self.endpoints)
        # Fewest in flight wins; among equals, the one next in turn.
        return min(healthy, key=lambda e: (e.in_flight, (self.endpoints.index(e) - self._turn) % n))

    # -- one attempt ------------------------------------------------------------
    async def complete(self, req: ChatRequest, timeout: float) -> ChatResponse:
        ep = self._pick()
        ep.in_flight += 1
        try:
            return await self._complete_on(ep, req, timeout)
        except LLMTransientError:
            ep.failures += 1
            ep.paused_until = time.monotonic() + FAILED_ENDPOINT_PAUSE_S
            raise
        finally:
            ep.in_flight -= 1

    async def _complete_on(self, ep: _Endpoint, req: ChatRequest, timeout: float) -> ChatResponse:
        modes = self._modes(ep, req)
        for i, mode in enumerate(modes):
            payload = self.payload(req, mode)
            try:
                body = await self._post(ep, payload, timeout)
            except (LLMRequestError, LLMTransientError) as e:
                last = i == len(modes) - 1
                # llama-cpp-python's server reports a request that fails validation as a
                # 500, so a 500 that names response_format counts as a rejection too.
                if last or mode == "none" or e.status not in (400, 422, 500) or "response_format" not in str(e):
                    raise
                log.info("%s rejected response_format %s; trying %s", ep.base_url, mode, modes[i + 1])
                continue
            if req.response_format == "json" and ep.structured != mode:
                ep.structured = mode
                log.info("%s: structured output via %s", ep.base_url, mode)
            return self._parse(body)
        raise AssertionError("unreachable")

    def _modes(self, ep: _Endpoint, req: ChatRequest) -> list[str]:
        if req.response_format != "json":
            return ["none"]
        if self.structured_output != "auto":
            return [self.structured_output]
        ladder = list(STRUCTURED_MODES) if req.json_schema is not None else ["json_object", "none"]
        if ep.structured in ladder:
            ladder = ladder[ladder.index(ep.structured):]
        return ladder

    def payload(self, req: ChatRequest, mode: str = "none") -> dict[str, Any]:
        """The JSON body for `req`, with response_format in the given structured mode."""
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in req.messages],
                                "temperature": req.temperature, "max_tokens": req.max_tokens, "stream": False}
        if req.seed is not None:
            body["seed"] = req.seed
        if req.stop:
            body["stop"] = list(req.stop)
        if mode == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": req.json_schema, "strict": True}}
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
            if req.json_schema is not None:
                body["response_format"]["schema"] = req.json_schema
        return body

    async def _post(self, ep: _Endpoint, payload: dict[str, Any], timeout: float) -> Any:
        httpx = httpx_module()
        ep.requests += 1
        url = ep.base_url + "/chat/completions"
        try:
            r = await self._client().post(url, json=payload, timeout=timeout)
        except httpx.TimeoutException as e:
            raise LLMTransientError(f"{url}: timed out ({type(e).__name__})", kind="timeout") from e
        except httpx.TransportError as e:
            raise LLMTransientError(f"{url}: {type(e).__name__}: {e}", kind="connection") from e
        if r.status_code == 429 or r.status_code >= 500:
            raise LLMTransientError(f"{url}: HTTP {r.status_code}: {_snippet(r.text)}", status=r.status_code,
                                    retry_after=parse_retry_after(r.headers.get("retry-after")))
        if r.status_code >= 400:
            hint = ""
            if r.status_code in (401, 403):
                hint = f" (check the API key in ${self.api_key_env})"
            elif r.status_code == 404:
                hint = f" (check the base URL {ep.base_url} and the model name {self.model!r})"
            raise LLMRequestError(f"{url}: HTTP {r.status_code}: {_snippet(r.text)}{hint}", status=r.status_code)
        try:
            return r.json()
        except ValueError as e:
            raise LLMTransientError(f"{url}: the body is not JSON: {_snippet(r.text)}", status=r.status_code,
                                    malformed=True) from e

    def _parse(self, body: Any) -> ChatResponse:
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise LLMTransientError(f"the body is not a chat completion (no choices[0].message.content): "
                                    f"{_snippet(str(body))}", malformed=True) from e
        if not isinstance(text, str):
            raise LLMTransientError(f"choices[0].message.content is {type(text).__name__}, not text",
                                    malformed=True)
        usage = body.get("usage") or {}
        return ChatResponse(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                            completion_tokens=int(usage.get("completion_tokens") or 0),
                            backend=self.kind, model=self.model, finish_reason=choice.get("finish_reason"))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "api_key_env": self.api_key_env,
                "endpoints": [{"base_url": e.base_url, "requests": e.requests, "failures": e.failures,
                               "structured_output": e.structured} for e in self.endpoints]}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _snippet(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."
