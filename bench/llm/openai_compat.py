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

`probe()` checks each endpoint before any real request: GET {base_url}/models (vLLM,
llama.cpp and OpenAI all list what they serve there) must answer, accept the key and list
the model; a server that lists no models is asked one 1-token chat completion instead.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlparse

from bench.errors import BenchError
from bench.llm.base import (ChatRequest, ChatResponse, LLMBackend, LLMRefusal, LLMRequestError, LLMTransientError,
                            LLMUnavailable)
from bench.llm.http import httpx_module

if TYPE_CHECKING:
    from bench.llm.spec import LLMSpec

log = logging.getLogger(__name__)

STRUCTURED_MODES = ("json_schema", "json_object", "none")
FAILED_ENDPOINT_PAUSE_S = 5.0
# A probe retries a 429/5xx this many times, this far apart: a server still loading its
# model answers 503 for a moment, but the probe must give its verdict within seconds.
PROBE_RETRIES = 2
PROBE_PAUSE_S = 0.5
# A chat probe generates one token, which a busy server may queue for a while; only its
# connection must be quick.
PROBE_CHAT_READ_S = 30.0


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
            raise LLMUnavailable(f"the environment variable {api_key_env} (named as the API key) is not set",
                                 f"export {api_key_env}=...", kind="auth")
        self._turn = 0
        self._http: Any = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_spec(cls, spec: "LLMSpec", **backend_kw: Any) -> "OpenAICompatBackend":
        return cls(spec.base_urls, spec.model or "", **backend_kw)

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
        refusal = choice["message"].get("refusal") if isinstance(choice["message"], dict) else None
        if isinstance(refusal, str) and refusal.strip():
            # OpenAI's structured outputs report a refusal here, with no content: final, and
            # not to be taken for a malformed body and retried.
            raise LLMRefusal(f"the model refused to answer: {_snippet(refusal)}")
        if not isinstance(text, str):
            raise LLMTransientError(f"choices[0].message.content is {type(text).__name__}, not text",
                                    malformed=True)
        usage = body.get("usage") or {}
        return ChatResponse(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                            completion_tokens=int(usage.get("completion_tokens") or 0),
                            backend=self.kind, model=self.model, finish_reason=choice.get("finish_reason"))

    # -- probe ----------------------------------------------------------------
    def probe(self, timeout: float = 5.0) -> None:
        """Every endpoint reachable, accepting the key and serving the model, or LLMUnavailable.

        One unreachable endpoint among several is only a warning (requests pass it over), but
        one that rejects the key or serves another model is an error: its answers would be
        refused, or come from the wrong model."""
        unreachable: list[LLMUnavailable] = []
        for ep in self.endpoints:
            try:
                self._probe_endpoint(ep, timeout)
            except LLMUnavailable as e:
                if e.kind != "unreachable":
                    raise
                unreachable.append(e)
        if len(unreachable) == len(self.endpoints):
            raise unreachable[0]
        for e in unreachable:
            log.warning("%s; requests go to the other endpoints", e.reason)

    def _probe_endpoint(self, ep: _Endpoint, timeout: float) -> None:
        httpx = httpx_module()
        with httpx.Client(headers=self._headers, timeout=timeout) as http:
            r = self._probe_call(http, ep, "GET", "/models", None, timeout)
            if r.status_code < 400:
                served = _served_models(r)
                if served:
                    if self.model not in served:
                        shown = ", ".join(served[:10]) + (f", ... ({len(served)} in all)" if len(served) > 10 else "")
                        raise LLMUnavailable(f"{ep.base_url} does not serve model {self.model!r} (it serves: {shown})",
                                             "use one of the served names as the model", kind="model")
                    return
            elif r.status_code in (401, 403):
                raise self._rejected(ep, r)
            # No listing here (404/405/501, or a body without one): one 1-token completion
            # tells whether the key and the model are accepted.
            payload = {"model": self.model, "messages": [{"role": "user", "content": "Say OK."}],
                       "max_tokens": 1, "temperature": 0.0, "stream": False}
            chat_timeout = httpx.Timeout(max(timeout, PROBE_CHAT_READ_S), connect=timeout)
            r = self._probe_call(http, ep, "POST", "/chat/completions", payload, chat_timeout)
            if r.status_code in (401, 403):
                raise self._rejected(ep, r)
            if r.status_code == 404:
                raise LLMUnavailable(f"{ep.base_url} does not serve model {self.model!r} (HTTP 404 on "
                                     f"/chat/completions: {_snippet(r.text, 160)})",
                                     "check the model name and the base URL", kind="model")
            if r.status_code >= 400:
                # Reachable and not refusing the model; what the real requests make of it
                # is theirs to report.
                log.info("%s answered the probe with HTTP %d: %s", ep.base_url, r.status_code, _snippet(r.text, 160))

    def _probe_call(self, http: Any, ep: _Endpoint, method: str, path: str, payload: Any, timeout: Any) -> Any:
        """One probe request, retried briefly on 429/5xx; transport failures become LLMUnavailable."""
        httpx = httpx_module()
        url = ep.base_url + path
        for attempt in range(PROBE_RETRIES + 1):
            try:
                r = http.request(method, url, json=payload, timeout=timeout)
            except httpx.TimeoutException as e:
                limit = _limit(timeout, connect=isinstance(e, httpx.ConnectTimeout))
                raise LLMUnavailable(f"{ep.base_url} did not answer {method} {path} within {limit:g} s",
                                     "check that the server is up and not overloaded", kind="unreachable") from e
            except httpx.TransportError as e:
                raise LLMUnavailable(_transport_reason(ep.base_url, e),
                                     "start the server or fix the URL", kind="unreachable") from e
            if r.status_code != 429 and r.status_code < 500:
                return r
            if attempt < PROBE_RETRIES:
                time.sleep(PROBE_PAUSE_S * (attempt + 1))
        raise LLMUnavailable(f"{ep.base_url} is not ready: HTTP {r.status_code} on {path}: {_snippet(r.text, 160)}",
                             "wait until the server has loaded its model, or check its log", kind="server")

    def _rejected(self, ep: _Endpoint, r: Any) -> LLMUnavailable:
        return LLMUnavailable(f"{ep.base_url} rejected the request: HTTP {r.status_code}: {_snippet(r.text, 160)}",
                              f"check the API key in ${self.api_key_env}", kind="auth")

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


def _served_models(r: Any) -> list[str]:
    """Model ids in an OpenAI-style listing {"data": [{"id": ...}, ...]}; [] when there is none."""
    try:
        body = r.json()
    except ValueError:
        return []
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return []
    return [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id")]


def _transport_reason(base_url: str, e: BaseException) -> str:
    """'refused the connection', 'host ... could not be resolved', or the error itself."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return f"{base_url} refused the connection"
        if isinstance(cause, socket.gaierror):
            return f"{base_url}: the host {urlparse(base_url).hostname!r} could not be resolved (DNS: {cause.strerror})"
        cause = cause.__cause__ or cause.__context__
    text = str(e)
    if "refused" in text.lower():
        return f"{base_url} refused the connection"
    if "name or service not known" in text.lower() or "name resolution" in text.lower():
        return f"{base_url}: the host {urlparse(base_url).hostname!r} could not be resolved (DNS: {text})"
    return f"{base_url} could not be reached: {type(e).__name__}: {text}"


def _limit(timeout: Any, connect: bool) -> float:
    """The seconds a probe waited: a plain number, or an httpx Timeout's connect/read part."""
    if isinstance(timeout, (int, float)):
        return float(timeout)
    return float(getattr(timeout, "connect" if connect else "read", None) or 0.0)


def _snippet(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."
