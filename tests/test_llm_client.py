"""LLMClient against a scripted OpenAI-compatible server: retries, Retry-After, timeouts,
malformed bodies, per-item failures, the concurrency limit, load sharing, the cache and
the structured-output fallback. Fast: small backoffs, a local server in a thread."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from llm_server import FaultServer, Reply, completion, echo, free_port

from bench.errors import BenchError
from bench.llm import ChatRequest, LLMClient, ResponseCache
from bench.llm.openai_compat import OpenAICompatBackend


def req(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=16, **kw)


def client_for(*urls: str, cache: ResponseCache | None = None, **kw) -> LLMClient:
    kw = {"max_retries": 3, "timeout": 5.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "jitter_seed": 0, **kw}
    return LLMClient(OpenAICompatBackend(list(urls), "scripted"), cache, **kw)


def test_plain_completion_and_payload():
    with FaultServer() as srv:
        c = client_for(srv.url)
        [r] = c.chat_many([req("hello", seed=3, stop=["\n"])], progress=False)
    assert r.ok and r.text == "echo: hello" and not r.cached
    assert (r.prompt_tokens, r.completion_tokens, r.attempts) == (7, 3, 1)
    body = srv.bodies[0]
    assert body["model"] == "scripted" and body["seed"] == 3 and body["stop"] == ["\n"]
    assert body["temperature"] == 0.0 and body["max_tokens"] == 16 and "response_format" not in body
    assert c.usage.as_dict() | {"call_seconds": 0} == {
        "requests": 1, "calls": 1, "cache_hits": 0, "prompt_tokens": 7, "completion_tokens": 3,
        "cached_prompt_tokens": 0, "cached_completion_tokens": 0, "retries": 0, "failures": 0,
        "malformed": 0, "invalid_json": 0, "call_seconds": 0, "errors": {}}


def test_batch_with_progress_bar_keeps_order_and_empty_batch():
    with FaultServer() as srv:
        c = client_for(srv.url)
        out = c.chat_many([req(f"p{i}") for i in range(5)], progress=True)
        assert [r.text for r in out] == [f"echo: p{i}" for i in range(5)]
        assert c.chat_many([], progress=True) == []


def test_5xx_is_retried_then_succeeds():
    def script(body, n):
        return Reply(status=503 if n == 1 else 500, body={"error": "busy"}) if n <= 2 else echo(body, n)

    with FaultServer(script) as srv:
        c = client_for(srv.url)
        [r] = c.chat_many([req("flaky")], progress=False)
    assert r.ok and r.attempts == 3 and srv.hits["flaky"] == 3
    assert (c.usage.calls, c.usage.retries, c.usage.failures) == (3, 2, 0)
    assert c.usage.errors == {"http_503": 1, "http_500": 1}


def test_429_honours_retry_after():
    def script(body, n):
        return Reply(status=429, body={"error": "slow down"}, headers={"Retry-After": "1"}) if n == 1 else echo(body, n)

    with FaultServer(script) as srv:
        c = client_for(srv.url)
        t0 = time.perf_counter()
        [r] = c.chat_many([req("limited")], progress=False)
        elapsed = time.perf_counter() - t0
    # The backoff alone would wait at most 0.05 s; Retry-After asks for 1 s.
    assert r.ok and elapsed >= 1.0 and srv.hits["limited"] == 2
    assert c.usage.retries == 1 and c.usage.errors == {"http_429": 1}


def test_timeout_is_retried():
    def script(body, n):
        return Reply(delay=4.0, body=completion("late").body) if n == 1 else echo(body, n)

    with FaultServer(script) as srv:
        c = client_for(srv.url, timeout=1.0)
        t0 = time.perf_counter()
        [r] = c.chat_many([req("slow")], progress=False)
        elapsed = time.perf_counter() - t0
    assert r.ok and r.text == "echo: slow" and elapsed < 4.0  # did not wait for the slow answer
    # Normally 2 attempts; on a loaded machine a quick answer may also miss the 1 s limit,
    # so check that the counts agree with each other rather than pin them.
    assert r.attempts >= 2 and srv.hits["slow"] == r.attempts
    assert c.usage.errors == {"timeout": r.attempts - 1} and c.usage.retries == r.attempts - 1


def test_4xx_is_not_retried_and_batch_goes_on():
    def script(body, n):
        prompt = body["messages"][-1]["content"]
        if prompt == "bad":
            return Reply(status=400, body={"error": {"message": "context length exceeded"}})
        return echo(body, n)

    with FaultServer(script) as srv:
        c = client_for(srv.url)
        out = c.chat_many([req("a"), req("bad"), req("b")], progress=False)
    assert [r.ok for r in out] == [True, False, True]
    assert [r.text for r in out] == ["echo: a", "", "echo: b"]
    assert "HTTP 400" in out[1].error and "context length exceeded" in out[1].error
    assert srv.hits["bad"] == 1 and out[1].attempts == 1
    assert (c.usage.failures, c.usage.retries, c.usage.requests) == (1, 0, 3)


def test_malformed_bodies_are_counted_and_fail_per_item():
    bodies = ["<html>gateway</html>", {"choices": []}, {"choices": [{"message": {"content": None}}]},
              {"unexpected": True}]

    def script(body, n):
        if body["messages"][-1]["content"] == "broken":
            return Reply(body=bodies[(n - 1) % len(bodies)])
        return echo(body, n)

    with FaultServer(script) as srv:
        c = client_for(srv.url, max_retries=3)
        out = c.chat_many([req("broken"), req("fine")], progress=False)
    assert not out[0].ok and out[1].ok
    assert "gave up after 4 attempts" in out[0].error
    assert srv.hits["broken"] == 4 and c.usage.malformed == 4 and c.usage.failures == 1
    assert c.usage.errors == {"malformed": 4}


def test_connection_refused_fails_cleanly():
    c = client_for(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    [r] = c.chat_many([req("anyone there")], progress=False)
    assert not r.ok and r.attempts == 2 and c.usage.errors == {"connection": 2}


def test_concurrency_limit_is_respected():
    def script(body, n):
        return Reply(delay=0.15, body=completion("x").body)

    with FaultServer(script) as srv:
        c = client_for(srv.url, max_concurrency=3)
        t0 = time.perf_counter()
        out = c.chat_many([req(f"q{i}") for i in range(9)], progress=False)
        elapsed = time.perf_counter() - t0
    assert all(r.ok for r in out)
    assert srv.max_in_flight == 3  # never more than the limit, and the limit is used
    assert elapsed < 9 * 0.15  # parallel, not serial


def test_endpoints_share_the_load_and_a_dead_one_is_passed_over():
    with FaultServer() as a, FaultServer() as b:
        c = client_for(a.url, b.url)
        out = c.chat_many([req(f"q{i}") for i in range(10)], progress=False)
        assert [r.text for r in out] == [f"echo: q{i}" for i in range(10)]  # order kept
        assert a.total_hits + b.total_hits == 10 and a.total_hits >= 3 and b.total_hits >= 3

        dead = f"http://127.0.0.1:{free_port()}/v1"
        c2 = client_for(dead, a.url, max_concurrency=1)
        out2 = c2.chat_many([req(f"r{i}") for i in range(6)], progress=False)
    assert all(r.ok for r in out2)
    # The dead endpoint fails once, then is paused while the live one answers the rest.
    assert c2.usage.errors == {"connection": 1} and c2.usage.calls == 7


def test_cache_makes_a_rerun_free(tmp_path):
    path = tmp_path / "llm.sqlite"
    with FaultServer() as srv:
        c1 = client_for(srv.url, cache=ResponseCache(path))
        first = c1.chat_many([req("a"), req("b")], progress=False)
        c2 = client_for(srv.url, cache=ResponseCache(path))
        second = c2.chat_many([req("a"), req("b"), req("c")], progress=False)
    assert [r.text for r in second[:2]] == [r.text for r in first]
    assert [r.cached for r in second] == [True, True, False]
    assert srv.hits == {"a": 1, "b": 1, "c": 1}
    assert (c2.usage.calls, c2.usage.cache_hits, c2.usage.prompt_tokens, c2.usage.cached_prompt_tokens) == (1, 2, 7, 14)


def test_failures_are_not_cached_and_readonly_stores_nothing(tmp_path):
    path = tmp_path / "llm.sqlite"
    state = {"down": True}

    def script(body, n):
        return Reply(status=500, body="down") if state["down"] else echo(body, n)

    with FaultServer(script) as srv:
        c = client_for(srv.url, cache=ResponseCache(path), max_retries=0)
        assert not c.chat_many([req("x")], progress=False)[0].ok
        state["down"] = False
        ro = client_for(srv.url, cache=ResponseCache(path, mode="readonly"))
        assert ro.chat_many([req("x")], progress=False)[0].ok
        assert len(ResponseCache(path)) == 0  # neither the failure nor the read-only answer
        rw = client_for(srv.url, cache=ResponseCache(path))
        assert rw.chat_many([req("x")], progress=False)[0].ok
        assert len(ResponseCache(path)) == 1
    assert srv.hits["x"] == 3


def test_identical_requests_in_one_batch_make_one_call():
    def script(body, n):
        return Reply(delay=0.1, body=completion("same", prompt_tokens=11, completion_tokens=5).body)

    with FaultServer(script) as srv:
        c = client_for(srv.url)
        out = c.chat_many([req("dup")] * 4, progress=False)
    assert [r.text for r in out] == ["same"] * 4 and srv.hits["dup"] == 1
    assert (c.usage.calls, c.usage.cache_hits) == (1, 3)
    # Paid once; the three shared answers count as cached tokens, like hits from the store.
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (11, 5)
    assert (c.usage.cached_prompt_tokens, c.usage.cached_completion_tokens) == (33, 15)


SCHEMA = {"type": "object", "properties": {"finding": {"type": "string"}}, "required": ["finding"]}


@pytest.mark.parametrize("status", [422, 500])  # llama-cpp-python's server answers 500
def test_structured_output_steps_down_to_what_the_server_takes(status):
    """A server like llama.cpp's: rejects type json_schema, accepts json_object+schema."""
    def script(body, n):
        rf = body.get("response_format")
        if rf and rf["type"] == "json_schema":
            return Reply(status=status, body={"detail": [{"loc": ["body", "response_format", "type"]}]})
        return completion('{"finding": "effusion"}')

    with FaultServer(script) as srv:
        c = client_for(srv.url)
        out = c.chat_many([req("q1", json_schema=SCHEMA), req("q2", json_schema=SCHEMA)], progress=False,)
        out += c.chat_many([req("q3", json_schema=SCHEMA)], progress=False)
    assert [r.json() for r in out] == [{"finding": "effusion"}] * 3
    kinds = [b.get("response_format", {}).get("type") for b in srv.bodies]
    # Each of the first two concurrent requests probes once; afterwards the endpoint
    # remembers json_object and goes straight to it.
    assert kinds.count("json_schema") <= 2 and kinds[-1] == "json_object"
    assert srv.bodies[-1]["response_format"]["schema"] == SCHEMA


def test_structured_output_falls_back_to_plain_text_extraction():
    def script(body, n):
        if "response_format" in body:
            return Reply(status=400, body={"error": {"message": "response_format is not supported"}})
        prompt = body["messages"][-1]["content"]
        return completion('Sure! ```json\n{"finding": "edema"}\n```' if prompt == "good" else "no json here")

    with FaultServer(script) as srv:
        c = client_for(srv.url)
        good, bad = c.chat_many([req("good", json_schema=SCHEMA), req("bad", json_schema=SCHEMA)], progress=False)
    assert good.json() == {"finding": "edema"}
    assert bad.ok and c.usage.invalid_json == 1


def test_other_400s_do_not_trigger_the_fallback():
    def script(body, n):
        return Reply(status=400, body={"error": {"message": "model not loaded"}})

    with FaultServer(script) as srv:
        c = client_for(srv.url)
        [r] = c.chat_many([req("q", json_schema=SCHEMA)], progress=False)
    assert not r.ok and srv.total_hits == 1


def test_chat_many_inside_a_loop_is_refused():
    c = client_for("http://127.0.0.1:9/v1")

    async def inside():
        c.chat_many([req("x")], progress=False)

    with pytest.raises(BenchError, match="achat_many"):
        asyncio.run(inside())


def test_api_key_is_sent_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("MY_VLLM_KEY", "sekret")
    seen = {}

    with FaultServer() as srv:
        b = OpenAICompatBackend([srv.url], "scripted", api_key_env="MY_VLLM_KEY")
        assert b._headers["Authorization"] == "Bearer sekret"
        assert "sekret" not in json.dumps(b.describe())
        seen["ok"] = LLMClient(b).chat_many([req("k")], progress=False)[0].ok
    assert seen["ok"]
    monkeypatch.delenv("MY_VLLM_KEY")
    with pytest.raises(BenchError, match="MY_VLLM_KEY"):
        OpenAICompatBackend(["http://x/v1"], "m", api_key_env="MY_VLLM_KEY")
