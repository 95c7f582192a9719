"""Reliability of the LLM layer: only answers are cached (not empty completions, 5xx after
the retries, connection errors, refusals); a damaged cache file is one clear error; a
hanging server is bounded by the request and run deadlines; a dead endpoint trips the
circuit breaker. Fast: a scripted server in a thread, a raw socket that never answers."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from llm_server import FaultServer, Reply, completion, echo, free_port

from bench.errors import BenchError
from bench.llm import CacheCorruptError, ChatRequest, ChatResponse, LLMClient, LLMDeadlineExceeded, ResponseCache
from bench.llm.client import BREAKER_FAILURES, REQUEST_DEADLINE_CAP_S, default_request_deadline
from bench.llm.openai_compat import OpenAICompatBackend


def req(text: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=16)


def client_for(*urls: str, cache: ResponseCache | None = None, **kw) -> LLMClient:
    kw = {"max_retries": 2, "timeout": 5.0, "backoff_base_s": 0.01, "backoff_max_s": 0.02, "jitter_seed": 0, **kw}
    return LLMClient(OpenAICompatBackend(list(urls), "scripted"), cache, **kw)


class HangingServer:
    """Accepts connections and reads, but never answers: a judge that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.conns: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)  # kept open, never written to

    def __enter__(self) -> "HangingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


# -- only answers are cached ------------------------------------------------------

def _rerun_asks_again(tmp_path, script, prompt: str, expect_error: str) -> None:
    path = tmp_path / "c.sqlite"
    with FaultServer(script) as srv:
        c = client_for(srv.url, cache=ResponseCache(path))
        [r] = c.chat_many([req(prompt)], progress=False)
        assert not r.ok and expect_error in r.error and r.text == ""
        assert len(c.cache) == 0
        c.close()
    # The server works now: the re-run asks it, and that answer is the one stored.
    with FaultServer() as srv:
        c = client_for(srv.url, cache=ResponseCache(path))
        [r] = c.chat_many([req(prompt)], progress=False)
        assert r.ok and not r.cached and r.text == f"echo: {prompt}" and srv.hits[prompt] == 1
        assert len(c.cache) == 1
        c.close()


def test_empty_completion_is_retried_and_never_cached(tmp_path):
    _rerun_asks_again(tmp_path, lambda body, n: completion(""), "empty", "empty completion")


def test_whitespace_only_completion_counts_as_empty():
    with FaultServer(lambda body, n: completion("  \n") if n == 1 else echo(body, n)) as srv:
        c = client_for(srv.url)
        [r] = c.chat_many([req("blank")], progress=False)
    assert r.ok and r.attempts == 2 and c.usage.errors == {"empty": 1}


def test_500_after_retries_is_never_cached(tmp_path):
    _rerun_asks_again(tmp_path, lambda body, n: Reply(status=500, body={"error": "down"}), "five", "HTTP 500")


def test_connection_error_is_never_cached(tmp_path):
    path = tmp_path / "c.sqlite"
    c = client_for(f"http://127.0.0.1:{free_port()}/v1", cache=ResponseCache(path))
    [r] = c.chat_many([req("dead")], progress=False)
    assert not r.ok and "gave up after 3 attempts" in r.error and len(c.cache) == 0
    assert c.usage.errors == {"connection": 3}
    c.close()
    with FaultServer() as srv:
        c = client_for(srv.url, cache=ResponseCache(path))
        [r] = c.chat_many([req("dead")], progress=False)
        assert r.ok and not r.cached and srv.hits["dead"] == 1 and len(c.cache) == 1
        c.close()


@pytest.mark.parametrize("kind", ["content_filter", "refusal_field"])
def test_refusal_is_final_and_never_cached(tmp_path, kind):
    def script(body, n):
        if kind == "content_filter":
            r = completion("partial")
            r.body["choices"][0]["finish_reason"] = "content_filter"
            return r
        r = completion("")
        r.body["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": "I can't help."}
        return r

    with FaultServer(script) as srv:
        c = client_for(srv.url, cache=ResponseCache(tmp_path / "c.sqlite"))
        [r] = c.chat_many([req("refuse")], progress=False)
    assert not r.ok and "refused" in r.error and srv.hits["refuse"] == 1  # not retried
    assert len(c.cache) == 0 and c.usage.errors == {"refusal": 1} and c.usage.failures == 1


def test_cache_never_stores_or_serves_an_empty_answer(tmp_path):
    c = ResponseCache(tmp_path / "c.sqlite")
    c.put("k", "openai", "m", req("x"), ChatResponse(text=""))
    assert len(c) == 0
    # An empty row left by an older version reads as a miss.
    assert c._db is not None
    c._db.execute("INSERT INTO responses VALUES ('old', 'openai', 'm', '{}', '', 1, 0, 'stop', 0)")
    assert c.get("old") is None


# -- a damaged cache file ---------------------------------------------------------

def _assert_recovery_message(e: BaseException, path) -> None:
    msg = str(e)
    assert str(path) in msg and "damaged" in msg and "move it away" in msg and "delete it" in msg
    assert "asked of the LLM again" in msg


def test_garbage_cache_file_is_one_clear_error(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(os.urandom(8192))
    for mode in ("readwrite", "readonly"):
        with pytest.raises(CacheCorruptError) as ei:
            ResponseCache(path, mode=mode)
        assert isinstance(ei.value, BenchError)
        _assert_recovery_message(ei.value, path)


def _filled_cache(path, n: int = 400) -> None:
    c = ResponseCache(path)
    for i in range(n):
        c.put(f"k{i}", "openai", "m", req(f"q{i}" * 40), ChatResponse(text=f"answer {i} " * 30))
    c.close()
    assert not os.path.exists(str(path) + "-wal")  # checkpointed on close: one self-contained file


def test_truncated_cache_file_is_one_clear_error(tmp_path):
    path = tmp_path / "c.sqlite"
    _filled_cache(path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(CacheCorruptError) as ei:
        ResponseCache(path)
    _assert_recovery_message(ei.value, path)


def test_damage_found_on_first_use_stops_the_batch(tmp_path):
    """A damaged page that only a read finds: the batch stops with the cache's message
    instead of turning every request into a failure."""
    path = tmp_path / "c.sqlite"
    _filled_cache(path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # scribble over every page but the first (the schema)
        for off in range(4096, size, 4096):
            f.seek(off)
            f.write(b"\xff" * 64)
    with FaultServer() as srv:
        c = client_for(srv.url, cache=ResponseCache(path))
        with pytest.raises(CacheCorruptError) as ei:
            c.chat_many([req(f"q{i}" * 40) for i in range(5)], progress=False)
    _assert_recovery_message(ei.value, path)


# -- deadlines ------------------------------------------------------------------

def test_default_request_deadline():
    assert default_request_deadline(120.0, 4) == REQUEST_DEADLINE_CAP_S == 600.0
    assert default_request_deadline(10.0, 4) == 50.0
    assert default_request_deadline(900.0, 4) == 900.0  # never below one attempt's timeout
    assert LLMClient(OpenAICompatBackend(["http://x/v1"], "m")).request_deadline == 600.0
    with pytest.raises(BenchError, match="request_deadline"):
        LLMClient(OpenAICompatBackend(["http://x/v1"], "m"), request_deadline=0)
    with pytest.raises(BenchError, match="run_deadline"):
        LLMClient(OpenAICompatBackend(["http://x/v1"], "m"), run_deadline=-1)


def test_hanging_server_request_deadline_bounds_retries(tmp_path):
    with HangingServer() as srv:
        c = client_for(srv.url, cache=ResponseCache(tmp_path / "c.sqlite"), timeout=0.5, max_retries=50,
                       request_deadline=1.6)
        t0 = time.monotonic()
        [r] = c.chat_many([req("hang")], progress=False)
        elapsed = time.monotonic() - t0
    assert not r.ok and "request deadline of 1.6 s" in r.error and elapsed < 1.6 + 2.0
    assert 2 <= r.attempts <= 5 and len(c.cache) == 0
    assert c.usage.errors.get("request_deadline") == 1 and c.usage.failures == 1


def test_request_deadline_cuts_an_attempt_in_flight():
    with HangingServer() as srv:
        c = client_for(srv.url, timeout=30.0, request_deadline=0.8)
        t0 = time.monotonic()
        [r] = c.chat_many([req("hang")], progress=False)
        elapsed = time.monotonic() - t0
    assert not r.ok and "request deadline of 0.8 s" in r.error and elapsed < 0.8 + 2.0


def test_run_deadline_fails_outstanding_and_later_requests_fast(tmp_path):
    path = tmp_path / "c.sqlite"
    with FaultServer() as srv:  # one answer cached beforehand: a hit is still served after the deadline
        c = client_for(srv.url, cache=ResponseCache(path))
        c.chat_many([req("cached")], progress=False)
        c.close()
    with HangingServer() as srv:
        c = client_for(srv.url, cache=ResponseCache(path), timeout=30.0, max_concurrency=2, run_deadline=1.0)
        t0 = time.monotonic()
        out = c.chat_many([req(f"p{i}") for i in range(6)], progress=False)
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0 + 2.0
        assert all(not r.ok and "run deadline of 1 s" in r.error for r in out)
        # Later requests fail at once, without a connection; cached answers still come back.
        t0 = time.monotonic()
        later = c.chat_many([req("later"), req("cached")], progress=False)
        assert time.monotonic() - t0 < 0.5
        assert not later[0].ok and "not sent" in later[0].error and later[0].attempts == 0
        assert later[1].ok and later[1].cached
        assert len(c.cache) == 1  # nothing new stored
    assert c.usage.errors.get("run_deadline") == 7


def test_run_deadline_error_type():
    import asyncio

    with HangingServer() as srv:
        c = client_for(srv.url, timeout=30.0, run_deadline=0.3)

        async def main():
            with pytest.raises(LLMDeadlineExceeded) as ei:
                await c.chat(req("x"))
            return ei.value

        e = asyncio.run(main())
    assert e.which == "run" and "run_deadline" in str(e)


# -- circuit breaker ------------------------------------------------------------

def test_breaker_stops_trying_a_dead_endpoint():
    dead = f"http://127.0.0.1:{free_port()}/v1"
    c = client_for(dead, max_retries=3, max_concurrency=1)  # one at a time: a predictable count
    t0 = time.monotonic()
    out = c.chat_many([req(f"p{i}") for i in range(20)], progress=False)
    elapsed = time.monotonic() - t0
    assert all(not r.ok for r in out)
    assert c.usage.calls == BREAKER_FAILURES == c.usage.errors["connection"]
    # Requests interleave (each backs off after its attempt), so every one ends on the breaker.
    assert all("stopped answering" in r.error for r in out)
    assert "8 connection failures in a row" in out[-1].error
    assert elapsed < 10
    # For the rest of the run: a later batch is not sent either.
    [r] = c.chat_many([req("again")], progress=False)
    assert "stopped answering" in r.error and c.usage.calls == BREAKER_FAILURES and r.attempts == 0


def test_breaker_counts_only_failures_in_a_row():
    """A server that answers in between (even with a 500) resets the count."""
    def script(body, n):
        return Reply(status=500, body={"error": "x"}) if body["messages"][-1]["content"].startswith("bad") \
            else echo(body, n)

    with FaultServer(script) as srv:
        c = client_for(srv.url, breaker_failures=2, max_retries=0)
        out = c.chat_many([req(f"bad{i}") for i in range(5)], progress=False)
    assert all("HTTP 500" in r.error for r in out) and c.usage.calls == 5


def test_breaker_can_be_disabled():
    c = client_for(f"http://127.0.0.1:{free_port()}/v1", max_retries=1, max_concurrency=1, breaker_failures=None)
    out = c.chat_many([req(f"p{i}") for i in range(6)], progress=False)
    assert c.usage.calls == 12 and not any("stopped answering" in r.error for r in out)
