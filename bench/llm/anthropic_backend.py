"""Anthropic's Messages API through the `anthropic` SDK (key in $ANTHROPIC_API_KEY).

The SDK's own retries are switched off (max_retries=0): LLMClient retries, so that its
counters see every attempt. System messages become the `system` parameter.

The SDK's surface has moved between releases, so we look at what the installed
`messages.create` accepts: current releases (2.x) take no `temperature` (it is then not
sent, and only keys the cache) and offer structured output as
output_config={"format": {"type": "json_schema", "schema": ...}}; older ones take
`temperature`, and a JSON schema is enforced with one forced tool whose input is the
answer. Anthropic takes no seed, so the seed only keys the cache.

Tested without network (request construction and error mapping against a mocked
transport); no call to the real API has been made from this project.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError, ModelUnavailableError
from bench.llm.base import ChatRequest, ChatResponse, LLMBackend, LLMRequestError, LLMTransientError, LLMUnavailable
from bench.llm.openai_compat import parse_retry_after

if TYPE_CHECKING:
    from bench.llm.spec import LLMSpec

log = logging.getLogger(__name__)

ANSWER_TOOL = "answer"
STRUCTURED_MODES = ("output_config", "tool")


def sdk_create_params() -> frozenset[str]:
    """The keyword arguments the installed SDK's messages.create accepts."""
    from anthropic.resources.messages import AsyncMessages

    return frozenset(inspect.signature(AsyncMessages.create).parameters)


class AnthropicBackend(LLMBackend):
    kind = "anthropic"

    def __init__(self, model: str, *, api_key_env: str = "ANTHROPIC_API_KEY", base_url: str | None = None,
                 structured_output: str = "auto", http_client_factory: Any = None):
        """`structured_output`: "auto" (output_config where the SDK has it, else a forced
        tool), "output_config" or "tool". `http_client_factory`: a callable returning the
        SDK's kind of AsyncClient (tests pass one with a mock transport)."""
        if not model:
            raise BenchError("the Anthropic backend needs a model name (--model), e.g. claude-sonnet-4-5")
        try:
            import anthropic  # noqa: F401
        except ImportError as e:
            raise ModelUnavailableError("the anthropic package is not installed; "
                                        "pip install anthropic (or saerad-bench[llm])") from e
        self.api_key = os.environ.get(api_key_env)
        if not self.api_key:
            raise _no_key(api_key_env)
        params = sdk_create_params()
        if structured_output == "auto":
            structured_output = "output_config" if "output_config" in params else "tool"
        if structured_output not in STRUCTURED_MODES:
            raise BenchError(f"unknown structured_output {structured_output!r} for Anthropic; choose auto, "
                             + ", ".join(STRUCTURED_MODES))
        self.structured_output = structured_output
        self.sends_temperature = "temperature" in params
        if not self.sends_temperature:
            log.info("the installed anthropic SDK takes no temperature; it is not sent (it still keys the cache)")
        self.model = model
        self.api_key_env = api_key_env
        self.base_url = base_url
        self._http_client_factory = http_client_factory
        self._sdk: Any = None
        self._sdk_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_spec(cls, spec: "LLMSpec", **backend_kw: Any) -> "AnthropicBackend":
        return cls(spec.model or "", **backend_kw)

    def probe(self, timeout: float = 5.0) -> None:
        """The key's variable is still set. No request is sent: the API bills none for a
        probe, but a wrong key or model is reported by the first real request (HTTP
        401/404, final at once, the study then failed)."""
        if not os.environ.get(self.api_key_env):
            raise _no_key(self.api_key_env)

    def _client(self):
        import anthropic

        loop = asyncio.get_running_loop()
        if self._sdk is None or self._sdk_loop is not loop:
            kw: dict[str, Any] = {"api_key": self.api_key, "max_retries": 0}
            if self.base_url:
                kw["base_url"] = self.base_url
            if self._http_client_factory is not None:
                kw["http_client"] = self._http_client_factory()
            self._sdk, self._sdk_loop = anthropic.AsyncAnthropic(**kw), loop
        return self._sdk

    async def aclose(self) -> None:
        if self._sdk is not None:
            try:
                await self._sdk.close()
            except RuntimeError:
                pass
            self._sdk, self._sdk_loop = None, None

    def request_kwargs(self, req: ChatRequest) -> dict[str, Any]:
        """The keyword arguments for messages.create (also what the tests check)."""
        system: list[str] = []
        messages: list[dict[str, str]] = []
        for n, m in enumerate(req.messages):
            if m["role"] == "system":
                if messages:
                    raise LLMRequestError(f"message {n}: Anthropic takes system text only before the "
                                          "conversation; move it to the start")
                system.append(m["content"])
            else:
                messages.append({"role": m["role"], "content": m["content"]})
        if not messages or messages[0]["role"] != "user":
            raise LLMRequestError("Anthropic needs the first non-system message to be from the user")
        kw: dict[str, Any] = {"model": self.model, "max_tokens": req.max_tokens, "messages": messages}
        if self.sends_temperature:
            kw["temperature"] = req.temperature
        if system:
            kw["system"] = "\n\n".join(system)
        if req.stop:
            kw["stop_sequences"] = list(req.stop)
        if req.json_schema is not None and self.structured_output == "output_config":
            kw["output_config"] = {"format": {"type": "json_schema", "schema": req.json_schema}}
        elif req.json_schema is not None:
            kw["tools"] = [{"name": ANSWER_TOOL, "description": "Give the answer in this structure.",
                            "input_schema": req.json_schema}]
            kw["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        return kw

    async def complete(self, req: ChatRequest, timeout: float) -> ChatResponse:
        import anthropic

        kw = self.request_kwargs(req)
        try:
            msg = await self._client().messages.create(**kw, timeout=timeout)
        except anthropic.APITimeoutError as e:  # a subclass of APIConnectionError: test it first
            raise LLMTransientError(f"Anthropic: timed out ({e})", kind="timeout") from e
        except anthropic.APIConnectionError as e:
            raise LLMTransientError(f"Anthropic: connection failed ({e})", kind="connection") from e
        except anthropic.APIStatusError as e:
            raise map_status_error(e, self.api_key_env) from e
        return self._parse(msg, req)

    def _parse(self, msg: Any, req: ChatRequest) -> ChatResponse:
        blocks = getattr(msg, "content", None)
        if not isinstance(blocks, list):
            raise LLMTransientError("Anthropic: the answer has no content blocks", malformed=True)
        if req.json_schema is not None and self.structured_output == "tool":
            uses = [b for b in blocks if getattr(b, "type", None) == "tool_use"]
            if not uses:
                raise LLMTransientError("Anthropic: the forced answer tool was not used", malformed=True)
            text = json.dumps(uses[0].input)
        else:
            text = "".join(b.text for b in blocks if getattr(b, "type", None) == "text")
        usage = getattr(msg, "usage", None)
        return ChatResponse(text=text, prompt_tokens=int(getattr(usage, "input_tokens", 0) or 0),
                            completion_tokens=int(getattr(usage, "output_tokens", 0) or 0),
                            backend=self.kind, model=self.model, finish_reason=getattr(msg, "stop_reason", None))


def _no_key(api_key_env: str) -> LLMUnavailable:
    return LLMUnavailable(f"no Anthropic API key: the environment variable {api_key_env} is not set",
                          f"export {api_key_env}=...", kind="auth")


def map_status_error(e: Any, api_key_env: str = "ANTHROPIC_API_KEY") -> Exception:
    """An SDK APIStatusError as our error: 429, 5xx and 529 (overloaded) are transient."""
    status = int(getattr(e, "status_code", 0) or 0)
    headers = getattr(getattr(e, "response", None), "headers", {}) or {}
    detail = f"Anthropic: HTTP {status}: {getattr(e, 'message', e)}"
    if status == 429 or status >= 500:
        return LLMTransientError(detail, status=status, retry_after=parse_retry_after(headers.get("retry-after")))
    if status in (401, 403):
        detail += f" (check the key in ${api_key_env})"
    return LLMRequestError(detail, status=status)
