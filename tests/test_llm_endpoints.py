"""The endpoint file (bench.llm.endpoints): one TOML file naming every LLM endpoint.

Checked: a full file is read into the client each use asks for (URLs, model, concurrency,
timeouts, key variable); several endpoints of one model become one backend whose requests
really spread over both servers; the shorthands (`openai:URL` + model) still work; and the
bad input the format refuses: an unknown key, a key written into the file (under any
key-like name, or as the value of api_key_env), endpoints of different models sharing a
use, a use naming an endpoint that is not there, a model given twice that disagree."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from llm_server import FaultServer, echo

from bench.errors import BenchError
from bench.llm import ChatRequest, make_client, parse_spec
from bench.llm.endpoints import EndpointFileError, load_endpoint_file, resolve


def write(tmp_path: Path, text: str, name: str = "llm.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


FULL = """
    [uses]
    radfact = "judge"
    green = "green"
    saerad = ["node1", "node2"]

    [endpoints.judge]
    kind = "openai"
    url = "http://gpu1:8000/v1"
    model = "meta-llama/Meta-Llama-3-70B-Instruct"
    api_key_env = "MY_VLLM_KEY"
    concurrency = 32
    timeout = 250

    [endpoints.green]
    kind = "openai"
    url = "http://gpu2:8001/v1"
    model = "StanfordAIMI/GREEN-RadLlama2-7b"

    [endpoints.node1]
    url = "http://a:8000/v1"
    model = "Qwen/Qwen2.5-7B-Instruct"
    concurrency = 4
    timeout = 100

    [endpoints.node2]
    url = "http://b:8000/v1"
    model = "Qwen/Qwen2.5-7B-Instruct"
    concurrency = 6
    timeout = 200

    [endpoints.claude]
    kind = "anthropic"
    model = "claude-sonnet-4-5"
"""


def test_each_use_gets_its_endpoint(tmp_path, monkeypatch):
    f = write(tmp_path, FULL)
    monkeypatch.setenv("MY_VLLM_KEY", "secret-from-the-environment")
    c = make_client(f"@{f}", use="radfact")
    assert c.backend.kind == "openai" and c.backend.model == "meta-llama/Meta-Llama-3-70B-Instruct"
    assert [e.base_url for e in c.backend.endpoints] == ["http://gpu1:8000/v1"]
    assert (c.max_concurrency, c.timeout) == (32, 250)
    # The key comes from the variable the file names, and never lands in the manifest.
    assert c.backend._headers["Authorization"] == "Bearer secret-from-the-environment"
    assert "secret-from-the-environment" not in repr(c.manifest())
    assert c.manifest()["endpoint_file"] == {"file": str(f.resolve()), "endpoints": ["judge"]}
    assert parse_spec(f"@{f}", use="green").model == "StanfordAIMI/GREEN-RadLlama2-7b"
    # #NAME picks an endpoint whatever the use.
    assert parse_spec(f"@{f}#claude", use="radfact").kind == "anthropic"


def test_several_endpoints_of_one_model_are_one_backend(tmp_path):
    c = make_client(f"@{write(tmp_path, FULL)}", use="saerad")
    assert [e.base_url for e in c.backend.endpoints] == ["http://a:8000/v1", "http://b:8000/v1"]
    assert c.max_concurrency == 10  # each server's share adds up
    assert c.timeout == 200  # the longest of them


def test_requests_spread_over_the_endpoints_of_a_file(tmp_path):
    with FaultServer(echo) as a, FaultServer(echo) as b:
        f = write(tmp_path, f"""
            [uses]
            default = ["a", "b"]
            [endpoints.a]
            url = "{a.url}"
            model = "m"
            concurrency = 2
            [endpoints.b]
            url = "{b.url}"
            model = "m"
            concurrency = 2
        """)
        c = make_client(f"@{f}", use="anything")
        out = c.chat_many([ChatRequest(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(12)],
                          progress=False)
        assert all(r.ok for r in out)
        assert a.total_hits > 0 and b.total_hits > 0 and a.total_hits + b.total_hits == 12


def test_shorthands_still_work():
    s = parse_spec("openai:http://h:8000/v1", "m")
    assert (s.kind, s.base_urls, s.model, s.source) == ("openai", ("http://h:8000/v1",), "m", None)


def test_the_only_endpoint_needs_no_use(tmp_path):
    f = write(tmp_path, """
        [endpoints.one]
        url = "http://h:8000/v1"
        model = "m"
    """)
    assert parse_spec(f"@{f}", use="radfact").model == "m"


@pytest.mark.parametrize("text, message", [
    ("""
     [endpoints.j]
     url = "http://h:8000/v1"
     model = "m"
     colour = "blue"
     """, r"endpoints\.j\.colour: unknown key"),
    ("""
     [endpoints.j]
     url = "http://h:8000/v1"
     model = "m"
     [endpoints.j.server]
     engine = "llama-cpp"
     """, r"a \[server\] table is used only with managed = true"),
    ("""
     [endpoints.j]
     url = "http://h:8000/v1"
     model = "m"
     managed = true
     [endpoints.j.server]
     engine = "llama-cpp"
     gpus = 2
     """, r"endpoints\.j\.server\.gpus: unknown key"),
    ("""
     [uses]
     radfact = "nowhere"
     [endpoints.j]
     url = "http://h:8000/v1"
     model = "m"
     """, r"uses\.radfact names endpoint 'nowhere'"),
    ("""
     [endpoints.j]
     url = "h:8000"
     model = "m"
     """, r"not an http\(s\) base URL"),
    ("""
     [endpoints.j]
     url = "http://h/v1"
     model = "m"
     managed = true
     [endpoints.j.server]
     engine = "vllm"
     """, r"needs an explicit port"),
    ("[endpoints]\n", r"names no endpoints"),
    ("endpoints = [", r"not valid TOML"),
])
def test_bad_files_are_refused_with_the_field_named(tmp_path, text, message):
    f = write(tmp_path, text)
    with pytest.raises(EndpointFileError, match=message):
        load_endpoint_file(f)


@pytest.mark.parametrize("line", ['api_key = "sk-live-123"', 'token = "abc"', 'OPENAI_API_KEY = "sk-1"',
                                  'password = "hunter2"'])
def test_a_key_written_in_the_file_is_refused(tmp_path, line):
    f = write(tmp_path, f"""
        [endpoints.j]
        url = "http://h:8000/v1"
        model = "m"
        {line}
    """)
    with pytest.raises(EndpointFileError, match=r"keys are read only from the environment: write api_key_env"):
        load_endpoint_file(f)


def test_a_key_as_the_value_of_api_key_env_is_refused(tmp_path):
    f = write(tmp_path, """
        [endpoints.j]
        url = "http://h:8000/v1"
        model = "m"
        api_key_env = "sk-proj-AbC123-xyz"
    """)
    with pytest.raises(EndpointFileError, match=r"api_key_env: must be the NAME of an environment variable"):
        load_endpoint_file(f)


def test_endpoints_of_different_models_cannot_share_a_use(tmp_path):
    f = write(tmp_path, """
        [uses]
        radfact = ["a", "b"]
        [endpoints.a]
        url = "http://a:8000/v1"
        model = "m1"
        [endpoints.b]
        url = "http://b:8000/v1"
        model = "m2"
    """)
    with pytest.raises(EndpointFileError, match=r"must all be openai endpoints of one model"):
        resolve(f"@{f}", "radfact")


def test_several_endpoints_and_no_use_for_the_asker(tmp_path):
    f = write(tmp_path, FULL)
    with pytest.raises(EndpointFileError, match=r"no uses\.compose or uses\.default; add one, or write @"):
        resolve(f"@{f}", "compose")
    with pytest.raises(EndpointFileError, match=r"has no endpoint 'nope'"):
        resolve(f"@{f}#nope")


def test_a_model_given_twice_must_agree(tmp_path):
    f = write(tmp_path, FULL)
    with pytest.raises(BenchError, match=r"serves model 'meta-llama/Meta-Llama-3-70B-Instruct' but 'other' was"):
        parse_spec(f"@{f}", "other", use="radfact")


def test_metric_options_take_the_file_and_the_cli_refuses_a_bad_one_in_one_line(tmp_path):
    from radfact.metric import RadFactMetric

    f = write(tmp_path, FULL)
    m = RadFactMetric.from_options({"judge": f"@{f}"}, cache_root=tmp_path)
    assert m.model == "meta-llama/Meta-Llama-3-70B-Instruct"  # the signature names the file's model
    bad = write(tmp_path, '[endpoints.j]\nurl = "http://h:8000/v1"\nmodel = "m"\napi_key = "sk-1"\n', "bad.toml")
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "1", "reference": "No effusion.", "prediction": "No effusion."}\n')
    r = subprocess.run([sys.executable, "-c", "from bench.cli import main; main()", "score", "--predictions", str(preds), "-m", "radfact",
                        "--metric-opt", f"radfact.judge=@{bad}"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "300"}, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    err = (r.stdout + r.stderr).strip().splitlines()
    assert len(err) == 1 and "keys are read only from the environment" in err[0]
