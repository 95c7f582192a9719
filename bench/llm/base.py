"""The vocabulary every LLM backend speaks: requests, responses, errors and usage counters.

A backend turns one `ChatRequest` into one `ChatResponse` (one attempt, no retries);
`bench.llm.client.LLMClient` adds the cache, the concurrency limit and the retries on
top, so that each backend stays a thin translation of the request into its API.
"""

from __future__ import annotations

import abc
import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Sequence

from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.llm.spec import LLMSpec

ROLES = ("system", "user", "assistant")


# -- errors ------------------------------------------------------------------

class LLMError(BenchError):
    """An LLM call that failed for good (after any retries)."""


class LLMRequestError(LLMError):
    """The server refused the request itself (4xx other than 429): retrying cannot help.

    `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        self.status = status
        super().__init__(message)


class LLMTransientError(LLMError):
    """A failure worth retrying: timeout, connection error, 429, 5xx, a malformed body.

    `retry_after` is the server's Retry-After in seconds, when it sent one; `malformed`
    marks a body that could not be read as a chat completion (counted separately)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None,
                 malformed: bool = False, kind: str | None = None):
        self.status, self.retry_after, self.malformed = status, retry_after, malformed
        # A short label for the usage counters: "timeout", "connection", "http_503", "malformed".
        self.kind = kind or ("malformed" if malformed else f"http_{status}" if status else "connection")
        super().__init__(message)


class LLMOutputError(LLMError):
    """The model answered, but not in the form asked for (e.g. no JSON in the text)."""


class LLMRefusal(LLMError):
    """The model declined to answer (a flagged refusal or content filter). Final: asking
    again gets the same refusal, and it is never cached as an answer."""

    kind = "refusal"


class LLMDeadlineExceeded(LLMError):
    """A request stopped by a deadline: its own `request_deadline` (all attempts together)
    or the client's `run_deadline`. `which` is "request" or "run"."""

    def __init__(self, message: str, which: str):
        self.which = which
        self.kind = f"{which}_deadline"
        super().__init__(message)


class LLMEndpointDown(LLMError):
    """The client's circuit breaker is open: the endpoint failed to connect too many times
    in a row, so no more requests are sent to it by this client."""

    kind = "endpoint_down"


class LLMUnavailable(LLMError):
    """The backend cannot answer here, whatever the request: the server is unreachable, the
    key is missing or rejected, the model is not served, a package or file is missing.

    Raised by `LLMBackend.probe` (and by constructors for what they can see at once), so a
    caller can stop before spending anything. `reason` is one line a user understands
    ("http://gpu:8000/v1 refused the connection"); `remedy` says what to do; `kind` is one
    of "unreachable", "auth", "model", "server", "setup"."""

    def __init__(self, reason: str, remedy: str = "", kind: str = "setup"):
        self.reason, self.remedy, self.kind = reason, remedy, kind
        super().__init__(reason + (f" ({remedy})" if remedy else ""))


# -- requests and responses --------------------------------------------------

@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request.

    `response_format="json"` asks for a JSON answer; with `json_schema` also set, for
    one that follows the schema, using the server's structured output where it has it.
    `seed` is sent to servers that accept one (vLLM, llama.cpp); Anthropic ignores it.
    """

    messages: Sequence[dict[str, str]]
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = 0
    response_format: Literal["text", "json"] = "text"
    json_schema: dict[str, Any] | None = None
    stop: Sequence[str] | None = None

    def __post_init__(self) -> None:
        # Copy the messages into a tuple of fresh dicts: a caller who reuses and edits
        # its list afterwards must not change a request already built (or its cache key).
        object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))
        if self.stop is not None:
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.json_schema is not None and self.response_format == "text":
            object.__setattr__(self, "response_format", "json")
        self.validate()

    def validate(self) -> None:
        if not self.messages:
            raise LLMRequestError("a chat request needs at least one message")
        for n, m in enumerate(self.messages):
            if set(m) != {"role", "content"}:
                raise LLMRequestError(f"message {n} has keys {sorted(m)}; each message needs exactly "
                                      "'role' and 'content'")
            if m["role"] not in ROLES:
                raise LLMRequestError(f"message {n} has role {m['role']!r}; use one of {', '.join(ROLES)}")
            if not isinstance(m["content"], str):
                raise LLMRequestError(f"message {n}: content must be a string, got {type(m['content']).__name__}")
        if self.max_tokens < 1:
            raise LLMRequestError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise LLMRequestError(f"temperature must be in [0, 2], got {self.temperature}")
        if self.response_format not in ("text", "json"):
            raise LLMRequestError(f"response_format must be 'text' or 'json', got {self.response_format!r}")

    def key_fields(self) -> dict[str, Any]:
        """Everything that can change the answer; the cache key is built from these."""
        return {"messages": [dict(m) for m in self.messages], "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": self.seed, "response_format": self.response_format,
                "json_schema": self.json_schema, "stop": list(self.stop) if self.stop is not None else None}


@dataclass
class ChatResponse:
    """The answer to one request. In `LLMClient.chat_many` a request that failed for good
    comes back as a response with `error` set and empty text (check `ok`)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    backend: str = ""
    model: str = ""
    latency_s: float = 0.0
    finish_reason: str | None = None
    attempts: int = 0  # backend calls made for this answer (0 when served from the cache)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def json(self) -> Any:
        """The JSON value in the text, found tolerantly (see `extract_json`)."""
        from bench.llm.jsonx import extract_json

        if not self.ok:
            raise LLMError(f"no answer to parse: the request failed ({self.error})")
        return extract_json(self.text)


# -- backends ----------------------------------------------------------------

class LLMBackend(abc.ABC):
    """One way to reach a model. `complete` makes exactly one attempt.

    Raise `LLMTransientError` for what a retry may cure and `LLMRequestError` for what it
    cannot; the client turns anything else into a failure without retrying.

    Backends are plug-ins: registered under the entry-point group
    `saerad_bench.llm_backends` and built from a parsed `--llm` spec by `from_spec`."""

    kind: str = ""  # "openai", "anthropic", "gguf": part of the cache key
    model: str = ""

    @classmethod
    def from_spec(cls, spec: "LLMSpec", **backend_kw: Any) -> "LLMBackend":
        """The backend a parsed spec names; `backend_kw` are backend-specific keywords.

        A plug-in's spec is `kind[:ARG]`, with ARG (when given) in `spec.options["arg"]` and
        the model name in `spec.model`."""
        raise BenchError(f"LLM backend {cls.__module__}.{cls.__qualname__} does not define "
                         "from_spec(spec, **backend_kw); it cannot be built from a --llm spec")

    def probe(self, timeout: float = 5.0) -> None:
        """Check quickly, before any real request, that this backend can answer at all.

        Raise `LLMUnavailable` with a reason when it cannot (unreachable, key rejected,
        model not served). Returns None when it can. The default checks nothing: a plug-in
        without a probe is found out by its first request."""

    @abc.abstractmethod
    async def complete(self, req: ChatRequest, timeout: float) -> ChatResponse: ...

    async def aclose(self) -> None:
        """Release connections; called when a batch's event loop ends."""

    def describe(self) -> dict[str, Any]:
        """What the run manifest records about this backend (never secrets)."""
        return {"kind": self.kind, "model": self.model}


# -- usage counters ----------------------------------------------------------

@dataclass
class Usage:
    """Counters for one client; `as_dict()` goes into the run manifest.

    requests: chat requests asked for; calls: backend attempts actually made (retries
    included); cache_hits: requests answered from the cache; prompt/completion tokens:
    those of the calls made (tokens of cached answers are not paid again and are counted
    in cached_*_tokens); retries: attempts after a failed one; failures: requests that
    failed for good; malformed: bodies that were not a readable completion; invalid_json:
    answers to JSON requests that held no parseable JSON."""

    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    malformed: int = 0
    invalid_json: int = 0
    call_seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # failure kind -> count

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["call_seconds"] = round(self.call_seconds, 3)
        return d

    def merge(self, other: "Usage") -> None:
        for f in fields(self):
            if f.name == "errors":
                for k, v in other.errors.items():
                    self.errors[k] = self.errors.get(k, 0) + v
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def canonical_json(obj: Any) -> str:
    """Key-sorted, compact, ASCII JSON: equal values give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
