"""Managed LLM servers: llama.cpp or vLLM started as a child process, used, and stopped.

    server = ManagedServer.for_llama_cpp(ServerSettings(engine="llama-cpp"), "http://127.0.0.1:8012/v1", "smollm2")
    with server:                       # starts, waits until GET /models lists the model
        ...                            # requests to server.url
                                       # stopped on leaving, Ctrl-C included

The server gets its own process group (a Ctrl-C in the terminal reaches bench, which then
stops the whole group, children of vLLM included) and, on Linux, a parent-death signal, so a
bench process that is killed outright takes its server with it instead of leaving an orphan
holding the GPU and the port. A server that exits while starting, or is not healthy within
`startup_timeout`, is an error showing the tail of its log; a port already in use is an
error before anything starts.

The settings the metrics need are set on the command line: prefix caching (RadFact's
few-shot prefix is shared by every request), a context long enough for the prompts, a fixed
seed and greedy defaults (requests are sent at temperature 0 anyway).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from bench.errors import BenchError, ModelUnavailableError
from bench.llm.endpoints import ServerSettings

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 30
STOP_GRACE_S = 15.0
HEALTH_POLL_S = 0.5
LLAMA_CPP_CONTEXT = 8192  # SmolLM2's trained context; RadFact's faithful prompts fit in it
VLLM_INSTALL = "pip install vllm (on a machine with a GPU; see docs/llm-servers.md)"
_PR_SET_PDEATHSIG = 1


class ServerError(BenchError):
    """A managed server that could not be started or did not become healthy. The message's
    first line (`headline`) says what happened; the lines after it are the log's tail."""

    @property
    def headline(self) -> str:
        return str(self).split("\n", 1)[0]


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (a bind there fails)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the process group and stop() still apply
        pass


def llama_cpp_command(s: ServerSettings, host: str, port: int, served_name: str) -> list[str]:
    """llama-cpp-python's server (repacking off, bench.llm.llama_cpp_server) on a GGUF file."""
    from bench.llm.local_gguf import bundled_smollm2_path

    gguf = Path(s.model).expanduser() if s.model else bundled_smollm2_path()
    if not gguf.is_file():
        raise ModelUnavailableError(f"GGUF model file {gguf} does not exist; give the path of a .gguf file")
    threads = s.threads or min(4, os.cpu_count() or 1)
    # cache: llama-cpp-python's prompt cache reuses the longest cached prefix (RadFact's
    # few-shot examples); seed 0: the same answers run to run.
    return [sys.executable, "-m", "bench.llm.llama_cpp_server", "--model", str(gguf.resolve()),
            "--model_alias", served_name, "--host", host, "--port", str(port),
            "--n_ctx", str(s.context or LLAMA_CPP_CONTEXT),
            "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_gpu_layers", str(s.gpu_layers),
            "--seed", "0", "--cache", "true", *s.extra_args]


def vllm_command(s: ServerSettings, host: str, port: int, served_name: str) -> list[str]:
    """`vllm serve` with prefix caching, the context, greedy defaults and the parallelism asked for."""
    model = s.model or served_name
    cmd = ["vllm", "serve", model, "--host", host, "--port", str(port), "--served-model-name", served_name,
           "--enable-prefix-caching", "--seed", "0",
           # A model's generation_config.json may set sampling defaults; greedy is what a judge needs.
           "--override-generation-config", json.dumps({"temperature": 0.0}),
           "--tensor-parallel-size", str(s.tensor_parallel_size),
           "--pipeline-parallel-size", str(s.pipeline_parallel_size),
           "--data-parallel-size", str(s.data_parallel_size)]
    if s.context is not None:
        cmd += ["--max-model-len", str(s.context)]
    if s.gpu_memory_utilization is not None:
        cmd += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
    if s.chat_template:
        template = Path(s.chat_template).expanduser()
        if not template.is_file():
            raise BenchError(f"chat template {template} does not exist")
        cmd += ["--chat-template", str(template.resolve())]
    return cmd + list(s.extra_args)


def server_command(s: ServerSettings, host: str, port: int, served_name: str) -> list[str]:
    return (llama_cpp_command if s.engine == "llama-cpp" else vllm_command)(s, host, port, served_name)


@dataclass
class ManagedServer:
    command: list[str]
    url: str  # the OpenAI-compatible base URL, e.g. http://127.0.0.1:8012/v1
    model: str  # the name it serves
    startup_timeout: float = 900.0
    log_path: Path | None = None
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)
    _swept: bool = field(default=False, repr=False)  # the process group has been cleaned up

    @classmethod
    def from_settings(cls, s: ServerSettings, url: str, served_name: str) -> "ManagedServer":
        host, port = host_port(url)
        return cls(server_command(s, host, port, served_name), url.rstrip("/"), served_name, s.startup_timeout,
                   Path(s.log).expanduser() if s.log else None)

    @property
    def host_port(self) -> tuple[str, int]:
        return host_port(self.url)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def preflight(self) -> None:
        """What can be checked without starting: the program exists and the port is free."""
        exe = self.command[0]
        if exe == "vllm" and shutil.which("vllm") is None:
            raise ServerError(f"vLLM is not installed here (no `vllm` command): {VLLM_INSTALL}")
        if exe == sys.executable and "bench.llm.llama_cpp_server" in self.command:
            import importlib.util

            from bench.llm.local_gguf import LLAMA_CPP_INSTALL

            if importlib.util.find_spec("llama_cpp") is None:
                raise ServerError(f"serving a GGUF model needs llama-cpp-python: {LLAMA_CPP_INSTALL}")
        host, port = self.host_port
        if port_in_use(host, port):
            raise ServerError(f"port {port} on {host} is already in use, so a server for {self.url} cannot start "
                              "there; stop what holds it or give the endpoint another port")

    def start(self) -> None:
        """Start the server and return once it lists its model; ServerError (with the log's
        tail) if it exits or is not healthy in time. Stops it again on any failure."""
        if self.running:
            return
        self.preflight()
        self._swept = False
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="bench-llm-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        log.info("starting %s (log: %s)", " ".join(self.command[:4]), self.log_path)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self._log,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        except OSError as e:
            self._close_log()
            raise ServerError(f"cannot start {self.command[0]}: {e}") from e
        # Stopped at interpreter exit at the latest (a client nobody closed); the parent-death
        # signal covers a bench that is killed without exiting.
        atexit.register(self.stop)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        from bench.llm.http import httpx_module

        httpx = httpx_module()
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerError(f"the server for {self.url} exited with code {code} while starting; "
                                  f"the end of its log ({self.log_path}):\n{self.log_tail()}")
            try:
                r = httpx.get(self.url + "/models", timeout=2.0)
                if r.status_code == 200:
                    served = [m.get("id") for m in (r.json().get("data") or []) if isinstance(m, dict)]
                    if self.model in served:
                        log.info("server for %s is up (%s)", self.url, self.model)
                        return
                    last = f"it serves {served}, not {self.model!r}"
                else:
                    last = f"HTTP {r.status_code} on /models"
            except (httpx.TransportError, ValueError) as e:
                last = type(e).__name__
            time.sleep(HEALTH_POLL_S)
        raise ServerError(f"the server for {self.url} was not healthy within {self.startup_timeout:.0f} s "
                          f"({last}); the end of its log ({self.log_path}):\n{self.log_tail()}")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").rstrip().splitlines()
        return "\n".join(text[-lines:]) or "(the log is empty)"

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM to the server's process group, SIGKILL after `grace` seconds; its exit code."""
        p = self.process
        if p is None:
            return None
        if self._swept:
            return p.returncode
        if p.poll() is None:
            _signal_group(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("server for %s did not stop within %.0f s of SIGTERM; killing it", self.url, grace)
                _signal_group(p.pid, signal.SIGKILL)
                p.wait()
        # Anything of its group still alive (a worker that ignored SIGTERM) goes too; once
        # only, so that a group id reused later is never signalled.
        _signal_group(p.pid, signal.SIGKILL)
        self._swept = True
        self._close_log()
        return p.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "ManagedServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "model": self.model, "command": list(self.command),
                "log": str(self.log_path) if self.log_path else None}


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def host_port(url: str) -> tuple[str, int]:
    p = urlparse(url)
    if p.hostname is None or p.port is None:
        raise BenchError(f"{url!r}: a managed server's URL needs a host and an explicit port")
    return p.hostname, p.port


@contextlib.contextmanager
def judge_serving(client: Any, judge: str | None):
    """For an LLM-judged metric: the client's managed servers up for the block and stopped
    after it. One that cannot start makes the metric unavailable (MetricUnavailable with the
    first line); the whole error, its log's tail included, goes to the log."""
    from bench.errors import MetricUnavailable

    try:
        client.start_servers()
    except ServerError as e:
        log.error("%s", e)
        raise MetricUnavailable(f"judge {judge}: {e.headline}", "see the server log's tail above") from e
    try:
        yield
    finally:
        client.stop_servers()
