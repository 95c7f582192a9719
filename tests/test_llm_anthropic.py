"""The Anthropic backend, without network: the SDK runs against a mocked httpx transport.
What is tested: the request the SDK sends (system text, messages, sampling, stop
sequences, a forced tool for JSON schemas, the key header) and how API errors map onto
retries. No call to Anthropic's real API is made here."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("anthropic", reason="pip install anthropic")

from bench.errors import BenchError  # noqa: E402
from bench.llm import ChatRequest, LLMClient, LLMRequestError  # noqa: E402
from bench.llm.anthropic_backend import AnthropicBackend, map_status_error, sdk_create_params  # noqa: E402
from bench.llm.http import httpx_module  # noqa: E402

httpx = httpx_module()  # the library the anthropic SDK is built on (httpx2 in current releases)

SCHEMA = {"type": "object", "properties": {"finding": {"type": "string"}}, "required": ["finding"]}


def message(content: list[dict], inp: int = 12, out: int = 5) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test", "content": content,
            "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": inp, "output_tokens": out}}


class Scripted:
    """A mock transport: replies in order, recording each request."""

    def __init__(self, replies: list):
        self.replies, self.requests = list(replies), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def backend(self, **kw) -> AnthropicBackend:
        return AnthropicBackend("claude-test", base_url="http://anthropic.invalid", **kw,
                                http_client_factory=lambda: httpx.AsyncClient(transport=httpx.MockTransport(self)))


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")


def fast(backend, **kw) -> LLMClient:
    return LLMClient(backend, max_retries=kw.pop("max_retries", 3), backoff_base_s=0.01, backoff_max_s=0.02, **kw)


CONVERSATION = [{"role": "system", "content": "You are a radiologist."}, {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Findings?"}, {"role": "assistant", "content": "Which study?"},
                {"role": "user", "content": "The chest film."}]


def test_request_construction_and_text_answer():
    t = Scripted([httpx.Response(200, json=message([{"type": "text", "text": "No acute "},
                                                     {"type": "text", "text": "findings."}]))])
    req = ChatRequest(messages=CONVERSATION, temperature=0.2, max_tokens=100, seed=5, stop=["\n\n"])
    [r] = fast(t.backend()).chat_many([req], progress=False)
    assert r.ok and r.text == "No acute findings." and (r.prompt_tokens, r.completion_tokens) == (12, 5)
    sent = t.requests[0]
    assert sent.url.path == "/v1/messages"
    # The key from $ANTHROPIC_API_KEY: older SDKs send x-api-key, current ones a bearer token.
    assert sent.headers.get("x-api-key") == "test-key" or sent.headers.get("authorization") == "Bearer test-key"
    body = json.loads(sent.content)
    # Current SDKs (2.x) have no temperature parameter: it is then not sent at all.
    temperature = {"temperature": 0.2} if "temperature" in sdk_create_params() else {}
    assert body == {"model": "claude-test", "max_tokens": 100, **temperature,
                    "system": "You are a radiologist.\n\nBe brief.", "stop_sequences": ["\n\n"],
                    "messages": [{"role": "user", "content": "Findings?"},
                                 {"role": "assistant", "content": "Which study?"},
                                 {"role": "user", "content": "The chest film."}]}


def test_json_schema_through_output_config():
    t = Scripted([httpx.Response(200, json=message([{"type": "text", "text": '{"finding": "effusion"}'}]))])
    [r] = fast(t.backend(structured_output="output_config")).chat_many(
        [ChatRequest(messages=CONVERSATION[2:3], json_schema=SCHEMA)], progress=False)
    assert r.json() == {"finding": "effusion"}
    body = json.loads(t.requests[0].content)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}} and "tools" not in body


def test_auto_structured_mode_follows_the_sdk():
    expected = "output_config" if "output_config" in sdk_create_params() else "tool"
    assert AnthropicBackend("claude-test").structured_output == expected


def test_json_schema_through_a_forced_tool():
    t = Scripted([httpx.Response(200, json=message([{"type": "tool_use", "id": "tu_1", "name": "answer",
                                                     "input": {"finding": "effusion"}}]))])
    [r] = fast(t.backend(structured_output="tool")).chat_many([ChatRequest(messages=CONVERSATION[2:3], json_schema=SCHEMA)], progress=False)
    assert r.json() == {"finding": "effusion"}
    body = json.loads(t.requests[0].content)
    assert body["tools"] == [{"name": "answer", "description": "Give the answer in this structure.",
                              "input_schema": SCHEMA}]
    assert body["tool_choice"] == {"type": "tool", "name": "answer"}


def _err(status: int, kind: str, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, json={"type": "error", "error": {"type": kind, "message": kind}})


def test_overloaded_rate_limited_and_timeouts_are_retried():
    ok = httpx.Response(200, json=message([{"type": "text", "text": "done"}]))
    t = Scripted([_err(529, "overloaded_error"), _err(429, "rate_limit_error", {"retry-after": "0"}),
                  _err(500, "api_error"), httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), ok])
    c = fast(t.backend(), max_retries=5)
    [r] = c.chat_many([ChatRequest(messages=CONVERSATION[2:3])], progress=False)
    assert r.ok and r.text == "done" and r.attempts == 6 and len(t.requests) == 6
    assert c.usage.errors == {"http_529": 1, "http_429": 1, "http_500": 1, "timeout": 1, "connection": 1}


@pytest.mark.parametrize("status, kind, hint", [(400, "invalid_request_error", "HTTP 400"),
                                               (401, "authentication_error", "ANTHROPIC_API_KEY"),
                                               (404, "not_found_error", "HTTP 404")])
def test_client_errors_are_final(status, kind, hint):
    t = Scripted([_err(status, kind)])
    c = fast(t.backend())
    [r] = c.chat_many([ChatRequest(messages=CONVERSATION[2:3])], progress=False)
    assert not r.ok and hint in r.error and len(t.requests) == 1 and c.usage.retries == 0


def test_retry_after_is_read_from_the_error():
    import anthropic

    resp = httpx.Response(429, headers={"retry-after": "2"}, request=httpx.Request("POST", "http://x/v1/messages"),
                          json={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
    err = map_status_error(anthropic.RateLimitError("slow", response=resp, body=None))
    assert err.retry_after == 2.0 and err.status == 429


def test_bad_conversations_and_missing_key(monkeypatch):
    b = AnthropicBackend("claude-test")
    with pytest.raises(LLMRequestError, match="only before the conversation"):
        b.request_kwargs(ChatRequest(messages=[{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]))
    with pytest.raises(LLMRequestError, match="first non-system message"):
        b.request_kwargs(ChatRequest(messages=[{"role": "assistant", "content": "a"}]))
    with pytest.raises(BenchError, match="output_config, tool"):
        AnthropicBackend("claude-test", structured_output="grammar")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(BenchError, match="ANTHROPIC_API_KEY"):
        AnthropicBackend("claude-test")
