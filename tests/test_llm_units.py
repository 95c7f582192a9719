"""Pieces of bench.llm that need no server: requests, cache keys and storage, tolerant
JSON extraction, Retry-After parsing, backoff bounds and --llm spec parsing."""

from __future__ import annotations

import email.utils
import hashlib
import json
import sqlite3

import pytest

from bench.errors import BenchError, UnknownNameError
from bench.llm import ChatRequest, ChatResponse, LLMOutputError, LLMRequestError, ResponseCache, cache_key
from bench.llm.client import LLMClient
from bench.llm.jsonx import extract_json
from bench.llm.openai_compat import OpenAICompatBackend, parse_retry_after
from bench.llm.spec import make_client, parse_spec

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Findings?"}]


# -- requests ------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    ({"messages": []}, "at least one message"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
    ({"messages": [{"role": "user", "text": "x"}]}, "exactly 'role' and 'content'"),
    ({"messages": [{"role": "user", "content": 3}]}, "content must be a string"),
    ({"messages": MSGS, "max_tokens": 0}, "max_tokens"),
    ({"messages": MSGS, "temperature": -1}, "temperature"),
    ({"messages": MSGS, "response_format": "xml"}, "response_format"),
])
def test_bad_requests_are_named(kw, match):
    with pytest.raises(LLMRequestError, match=match):
        ChatRequest(**kw)


def test_schema_implies_json_and_requests_are_immutable():
    msgs = [dict(m) for m in MSGS]
    r = ChatRequest(messages=msgs, json_schema={"type": "object"})
    assert r.response_format == "json"
    msgs[1]["content"] = "changed"  # the caller's list is not the request's
    assert r.messages[1]["content"] == "Findings?"


# -- cache keys ------------------------------------------------------------------

def test_cache_key_is_sha256_of_the_documented_canonical_json():
    r = ChatRequest(messages=MSGS, temperature=0.5, max_tokens=64, seed=1, stop=["\n"])
    doc = {"backend": "openai", "model": "m", "messages": MSGS, "temperature": 0.5, "max_tokens": 64, "seed": 1,
           "response_format": "text", "json_schema": None, "stop": ["\n"]}
    expected = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert cache_key("openai", "m", r) == expected


def test_cache_key_changes_with_everything_that_changes_the_answer():
    base = ChatRequest(messages=MSGS)
    k = cache_key("openai", "m", base)
    variants = [
        cache_key("anthropic", "m", base), cache_key("openai", "m2", base),
        cache_key("openai", "m", ChatRequest(messages=MSGS[::-1])),
        cache_key("openai", "m", ChatRequest(messages=MSGS, temperature=0.7)),
        cache_key("openai", "m", ChatRequest(messages=MSGS, max_tokens=10)),
        cache_key("openai", "m", ChatRequest(messages=MSGS, seed=None)),
        cache_key("openai", "m", ChatRequest(messages=MSGS, stop=["."])),
        cache_key("openai", "m", ChatRequest(messages=MSGS, response_format="json")),
        cache_key("openai", "m", ChatRequest(messages=MSGS, json_schema={"type": "object"})),
    ]
    assert k not in variants and len(set(variants)) == len(variants)
    # ...and not with what does not: dict key order inside a schema or a message.
    s1 = {"type": "object", "properties": {"a": {"type": "string"}}}
    s2 = {"properties": {"a": {"type": "string"}}, "type": "object"}
    assert cache_key("openai", "m", ChatRequest(messages=MSGS, json_schema=s1)) == \
        cache_key("openai", "m", ChatRequest(messages=MSGS, json_schema=s2))
    assert cache_key("openai", "m", ChatRequest(messages=[{"content": "Findings?", "role": "user"}])) == \
        cache_key("openai", "m", ChatRequest(messages=[{"role": "user", "content": "Findings?"}]))


def test_cache_store_survives_reopen_and_uses_wal(tmp_path):
    path = tmp_path / "c.sqlite"
    r = ChatRequest(messages=MSGS)
    c = ResponseCache(path)
    c.put("k1", "openai", "m", r, ChatResponse(text="Clear lungs.", prompt_tokens=11, completion_tokens=4))
    c.put("k2", "openai", "m", r, ChatResponse(text="", error="boom"))  # failures are not stored
    c.close()
    again = ResponseCache(path)
    hit = again.get("k1")
    assert (hit.text, hit.prompt_tokens, hit.completion_tokens) == ("Clear lungs.", 11, 4)
    assert again.get("k2") is None and len(again) == 1
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cache_modes(tmp_path):
    path = tmp_path / "c.sqlite"
    r = ChatRequest(messages=MSGS)
    ResponseCache(path).put("k", "openai", "m", r, ChatResponse(text="a"))
    ro = ResponseCache(path, mode="readonly")
    assert ro.get("k").text == "a"
    ro.put("k2", "openai", "m", r, ChatResponse(text="b"))
    assert ro.get("k2") is None
    off = ResponseCache(path, mode="off")
    assert off.get("k") is None and len(off) == 0
    assert ResponseCache(tmp_path / "absent.sqlite", mode="readonly").mode == "off"
    with pytest.raises(BenchError, match="readwrite, readonly, off"):
        ResponseCache(path, mode="sometimes")  # type: ignore[arg-type]


def test_corrupt_cache_file_is_a_clear_error(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(BenchError, match="delete it or choose another cache path"):
        ResponseCache(path)


# -- JSON extraction -------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ('{"a": 1}', {"a": 1}),
    ('  [1, 2]\n', [1, 2]),
    ('Here you go:\n```json\n{"finding": "edema"}\n```\nDone.', {"finding": "edema"}),
    ('```\n{"x": "y"}\n```', {"x": "y"}),
    ('The answer is {"text": "a } inside", "n": {"m": 2}} and more {"b": 1}', {"text": "a } inside", "n": {"m": 2}}),
    ('Not {this but} {"that": true}', {"that": True}),
])
def test_extract_json(text, value):
    assert extract_json(text) == value


@pytest.mark.parametrize("text", ["", "no json at all", "{broken: json", "```json\n{oops}\n```"])
def test_extract_json_failures(text):
    with pytest.raises(LLMOutputError, match="no JSON"):
        extract_json(text)


# -- retry timing ----------------------------------------------------------------

def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("-4") == 0.0
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0, abs=1.0)


def test_backoff_grows_exponentially_with_bounded_jitter():
    c = LLMClient(OpenAICompatBackend(["http://127.0.0.1:9/v1"], "m"), backoff_base_s=1.0, backoff_max_s=10.0,
                  jitter_seed=1)
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        delays = [c._delay(attempt, None) for _ in range(200)]
        assert min(delays) >= 0.5 * step and max(delays) <= step
        assert max(delays) - min(delays) > 0.2 * step  # jitter spreads clients out
    assert c._delay(1, 7.0) == 7.0  # Retry-After wins over the backoff
    assert c._delay(1, 1e9) == c.max_retry_after_s


# -- specs -----------------------------------------------------------------------

def test_parse_openai_specs(monkeypatch):
    s = parse_spec("openai:http://a:8000/v1,http://b:8000/v1/", "qwen")
    assert s.kind == "openai" and s.base_urls == ("http://a:8000/v1", "http://b:8000/v1/") and s.model == "qwen"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env:1/v1")
    assert parse_spec("openai", "m").base_urls == ("http://env:1/v1",)
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert parse_spec("openai", "m").base_urls == ("https://api.openai.com/v1",)
    with pytest.raises(BenchError, match="needs --model"):
        parse_spec("openai:http://a:8000/v1")
    with pytest.raises(BenchError, match="not an http"):
        parse_spec("openai:localhost:8000", "m")


def test_parse_other_specs(tmp_path):
    assert parse_spec("none").kind == "none" and make_client("none") is None
    assert parse_spec("anthropic", "claude-x").model == "claude-x"
    with pytest.raises(BenchError, match="needs --model"):
        parse_spec("anthropic")
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF")
    assert parse_spec(f"gguf:{g}").model_path == g and parse_spec("gguf").model_path is None
    with pytest.raises(BenchError, match="no such file"):
        parse_spec(f"gguf:{tmp_path / 'missing.gguf'}")
    with pytest.raises(UnknownNameError, match="anthropic, gguf, none, openai"):
        parse_spec("ollama:x")


def test_make_client_builds_a_cached_openai_client(tmp_path):
    c = make_client("openai:http://127.0.0.1:9/v1", "m", tmp_path / "c.sqlite", max_concurrency=2)
    assert c.backend.kind == "openai" and c.cache.mode == "readwrite" and c.max_concurrency == 2
    m = c.manifest()
    assert m["backend"]["endpoints"][0]["base_url"] == "http://127.0.0.1:9/v1" and m["usage"]["calls"] == 0
    assert make_client("openai:http://127.0.0.1:9/v1", "m", None).cache.mode == "off"
