"""LLMClient.probe() and the backend registry.

The probe must say within seconds, before any real request, why a backend cannot answer:
a refused connection, an unknown host, a rejected key, a model the server does not serve,
a server that is not ready. Checked against the scripted server (tests/llm_server.py),
a port nobody listens on, and the real llama_cpp.server with SmolLM2. Backends are
plug-ins read from the entry-point group saerad_bench.llm_backends: a test registers one.
"""

from __future__ import annotations

import time
from importlib import metadata

import pytest
from llm_server import FaultServer, Reply, completion, free_port, llama_server  # noqa: F401 (a fixture)

from bench.errors import BenchError, UnknownNameError
from bench.llm import ChatRequest, ChatResponse, LLMBackend, LLMClient, LLMUnavailable, make_client, parse_spec
from bench.llm.openai_compat import OpenAICompatBackend
from bench.llm.spec import LLMSpec, make_backend


def probe(url: str, model: str = "judge", timeout: float = 2.0) -> None:
    LLMClient(OpenAICompatBackend([url], model)).probe(timeout)


def not_found(body: dict, n: int) -> Reply:
    # vLLM's answer to a chat request for a model it does not serve.
    return Reply(status=404, body={"object": "error", "message": f"The model `{body['model']}` does not exist.",
                                   "type": "NotFoundError", "code": 404})


# -- reachability ------------------------------------------------------------------

def test_refused_connection_is_named_within_seconds():
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.perf_counter()
    with pytest.raises(LLMUnavailable) as exc:
        probe(url)
    assert time.perf_counter() - t0 < 3.0
    assert exc.value.reason == f"{url} refused the connection" and exc.value.kind == "unreachable"


def test_unknown_host_is_a_dns_failure():
    t0 = time.perf_counter()
    with pytest.raises(LLMUnavailable, match="could not be resolved") as exc:
        probe("http://no-such-host.invalid/v1")
    assert time.perf_counter() - t0 < 5.0 and "'no-such-host.invalid'" in exc.value.reason


def test_a_server_that_does_not_answer_in_time():
    def get(path: str) -> Reply:
        time.sleep(1.5)
        return Reply(body={"data": []})

    with FaultServer(get_script=get) as srv:
        t0 = time.perf_counter()
        with pytest.raises(LLMUnavailable, match=r"did not answer GET /models within 0.5 s"):
            probe(srv.url, timeout=0.5)
        assert time.perf_counter() - t0 < 1.5


def test_a_server_still_loading_is_retried_briefly_then_named():
    with FaultServer(get_script=lambda path: Reply(status=503, body={"error": "Loading model"})) as srv:
        t0 = time.perf_counter()
        with pytest.raises(LLMUnavailable, match=r"is not ready: HTTP 503 on /models: .*Loading model") as exc:
            probe(srv.url)
        assert time.perf_counter() - t0 < 4.0
    assert srv.gets["/v1/models"] == 3 and exc.value.kind == "server"


def test_a_server_that_recovers_during_the_probe_passes():
    state = {"n": 0}

    def get(path: str) -> Reply:
        state["n"] += 1
        return Reply(status=503, body="loading") if state["n"] == 1 else Reply(body={"data": [{"id": "judge"}]})

    with FaultServer(get_script=get) as srv:
        probe(srv.url)
    assert srv.gets["/v1/models"] == 2 and srv.total_hits == 0


# -- key and model -----------------------------------------------------------------

def test_model_missing_from_the_listing_names_what_is_served():
    with FaultServer(models=["a", "b"]) as srv:
        with pytest.raises(LLMUnavailable) as exc:
            probe(srv.url, model="judge")
        assert srv.total_hits == 0  # the listing answered it: no chat request
    assert exc.value.reason == f"{srv.url} does not serve model 'judge' (it serves: a, b)"
    assert exc.value.kind == "model"


def test_a_listed_model_passes_without_a_chat_request():
    with FaultServer(models=["x", "judge"]) as srv:
        probe(srv.url)
    assert srv.gets["/v1/models"] == 1 and srv.total_hits == 0


def test_a_404_for_the_model_on_a_chat_request_means_unknown_model():
    # No listing (GET /models is 404): the probe asks one 1-token completion.
    with FaultServer(not_found) as srv:
        with pytest.raises(LLMUnavailable, match=r"does not serve model 'judge' \(HTTP 404 on /chat/completions"):
            probe(srv.url)
    assert srv.total_hits == 1 and srv.bodies[0]["max_tokens"] == 1


def test_without_a_listing_one_completion_proves_the_server():
    with FaultServer() as srv:
        probe(srv.url)
    assert srv.total_hits == 1


@pytest.mark.parametrize("on", ["listing", "chat"])
@pytest.mark.parametrize("status", [401, 403])
def test_a_rejected_key_is_named(on, status):
    denied = Reply(status=status, body={"error": {"message": "Incorrect API key provided"}})
    get = (lambda path: denied) if on == "listing" else None
    with FaultServer(lambda body, n: denied, get_script=get) as srv:
        with pytest.raises(LLMUnavailable) as exc:
            probe(srv.url)
    assert exc.value.reason.startswith(f"{srv.url} rejected the request: HTTP {status}: ")
    assert "Incorrect API key" in exc.value.reason and "OPENAI_API_KEY" in exc.value.remedy
    assert exc.value.kind == "auth"


def test_one_dead_endpoint_among_live_ones_is_a_warning(caplog):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FaultServer(models=["judge"]) as live:
        LLMClient(OpenAICompatBackend([dead, live.url], "judge")).probe(2.0)
        assert "refused the connection; requests go to the other endpoints" in caplog.text
        with pytest.raises(LLMUnavailable, match="refused"):
            LLMClient(OpenAICompatBackend([dead, dead], "judge")).probe(2.0)
        # A live endpoint serving another model is an error, not a warning: its answers
        # would come from the wrong model.
        with FaultServer(models=["other"]) as wrong:
            with pytest.raises(LLMUnavailable, match="does not serve model 'judge'"):
                LLMClient(OpenAICompatBackend([live.url, wrong.url], "judge")).probe(2.0)


def test_probe_is_neither_cached_nor_counted(tmp_path):
    from bench.llm import ResponseCache

    with FaultServer() as srv:
        c = LLMClient(OpenAICompatBackend([srv.url], "judge"), ResponseCache(tmp_path / "c.sqlite"))
        c.probe(2.0)
    assert c.usage.requests == 0 and c.usage.calls == 0 and len(c.cache) == 0


# -- other backends ----------------------------------------------------------------

def test_anthropic_probe_checks_the_key_variable(monkeypatch):
    pytest.importorskip("anthropic")
    from bench.llm.anthropic_backend import AnthropicBackend

    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    b = AnthropicBackend("claude-test")
    b.probe()
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(LLMUnavailable, match="ANTHROPIC_API_KEY is not set"):
        b.probe()
    with pytest.raises(LLMUnavailable, match="ANTHROPIC_API_KEY is not set"):
        AnthropicBackend("claude-test")


def test_gguf_probe_checks_the_file_without_loading_it(tmp_path):
    pytest.importorskip("llama_cpp")
    from bench.llm.local_gguf import LocalGGUFBackend

    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF not really")
    b = LocalGGUFBackend(path)
    b.probe()  # a lazy load: an unreadable file is found by the first request, not here
    assert b._llama is None
    path.unlink()
    with pytest.raises(LLMUnavailable, match="does not exist"):
        b.probe()


def test_named_key_variable_that_is_unset_is_unavailable(monkeypatch):
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    with pytest.raises(LLMUnavailable, match="MY_JUDGE_KEY"):
        OpenAICompatBackend(["http://127.0.0.1:9/v1"], "m", api_key_env="MY_JUDGE_KEY")


# -- the real server -----------------------------------------------------------------

def test_probe_against_llama_cpp_server(llama_server):  # noqa: F811
    pytest.importorskip("llama_cpp")
    before = llama_server.completions_served()
    probe(llama_server.url, model="smollm2")
    with pytest.raises(LLMUnavailable) as exc:
        probe(llama_server.url, model="meta-llama/Meta-Llama-3-70B-Instruct")
    # llama-cpp-python's server would answer a chat request for any model name with its own
    # model; only its listing tells the two apart.
    assert exc.value.reason == (f"{llama_server.url} does not serve model 'meta-llama/Meta-Llama-3-70B-Instruct' "
                                "(it serves: smollm2)")
    assert llama_server.completions_served() == before


# -- the registry ----------------------------------------------------------------------

class EchoBackend(LLMBackend):
    """A plug-in as a third party writes one: `echo[:PREFIX]`."""

    kind = "echo"

    def __init__(self, prefix: str = "", model: str = "echo-model"):
        self.prefix, self.model = prefix, model

    @classmethod
    def from_spec(cls, spec: LLMSpec, **backend_kw) -> "EchoBackend":
        return cls(spec.options.get("arg", ""), spec.model or "echo-model", **backend_kw)

    async def complete(self, req: ChatRequest, timeout: float) -> ChatResponse:
        return ChatResponse(text=self.prefix + req.messages[-1]["content"], backend=self.kind, model=self.model)


class NotABackend:
    pass


@pytest.fixture
def plugins(monkeypatch):
    """Entry points as if a package registered `echo` (and a broken `bogus`) beside ours."""
    real = metadata.entry_points
    extra = [metadata.EntryPoint("echo", f"{__name__}:EchoBackend", "saerad_bench.llm_backends"),
             metadata.EntryPoint("bogus", f"{__name__}:NotABackend", "saerad_bench.llm_backends")]

    def entry_points(**kw):
        found = list(real(**kw))
        return found + extra if kw.get("group") == "saerad_bench.llm_backends" else found

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def test_builtin_backends_come_from_the_registry(tmp_path):
    from bench.llm.local_gguf import LocalGGUFBackend

    assert isinstance(make_backend(parse_spec("openai:http://a:1/v1", "m")), OpenAICompatBackend)
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF")
    if __import__("importlib").util.find_spec("llama_cpp") is not None:
        assert isinstance(make_backend(parse_spec(f"gguf:{g}")), LocalGGUFBackend)
    with pytest.raises(BenchError, match="no backend"):
        make_backend(parse_spec("none"))


def test_a_registered_backend_is_usable_by_kind_and_argument(plugins):
    # Everything after the first colon is the plug-in's, colons included, unparsed.
    spec = parse_spec("echo:re:", "m1")
    assert spec == LLMSpec("echo", model="m1", options={"arg": "re:"})
    assert parse_spec("echo").options == {}
    client = make_client("echo:re:", "m1")
    assert isinstance(client.backend, EchoBackend) and client.backend.model == "m1"
    client.probe()  # the base class's probe: a plug-in without one is trusted
    [r] = client.chat_many([ChatRequest(messages=[{"role": "user", "content": "hi"}])], progress=False)
    assert r.ok and r.text == "re:hi"


def test_unknown_kind_lists_the_registered_ones(plugins):
    with pytest.raises(UnknownNameError) as exc:
        parse_spec("ollama:x", "m")
    assert exc.value.choices == ["anthropic", "bogus", "echo", "gguf", "none", "openai"]


def test_a_registered_non_backend_is_refused(plugins):
    with pytest.raises(BenchError, match="not a bench.llm.LLMBackend class"):
        make_client("bogus", "m")
