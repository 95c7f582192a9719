"""Running a metric's worker script under another interpreter: one JSON request in, one JSON response out.

Metrics whose reference package cannot share bench's environment (RGER's radgraph, RaTEScore)
run it in a child process: bench writes the request to a file, runs `PYTHON WORKER REQUEST
RESPONSE`, and reads the response the worker wrote (only on success, atomically). The worker
scripts import nothing of bench, so any environment with their package can run them.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from bench.errors import BenchError


def run_json_worker(python: str, worker: Path, request: Mapping[str, Any], error: type[BenchError], what: str,
                    work: str, timeout_s: float | None = None, timeout_hint: str = "",
                    env: Mapping[str, str] | None = None) -> tuple[Any, float]:
    """(the worker's response, seconds it took); `error` naming `what` ran and on `work` if it fails."""
    with tempfile.TemporaryDirectory(prefix="worker-") as tmp:
        req_path, resp_path = Path(tmp) / "request.json", Path(tmp) / "response.json"
        req_path.write_text(json.dumps(request), encoding="utf-8")
        t0 = time.perf_counter()
        try:
            done = subprocess.run([python, str(worker), str(req_path), str(resp_path)], capture_output=True,
                                  text=True, timeout=timeout_s, env=dict(env) if env is not None else None)
        except subprocess.TimeoutExpired as exc:
            raise error(f"{what} timed out after {timeout_s} s on {work}" + (f"; {timeout_hint}" if timeout_hint
                                                                              else "")) from exc
        if done.returncode != 0 or not resp_path.is_file():
            tail = (done.stderr or "").strip()[-2000:]
            raise error(f"{what} ({python} {worker.name}) failed with exit status {done.returncode}:\n{tail}")
        try:
            response = json.loads(resp_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise error(f"{what} wrote an unreadable response: {exc}") from exc
    return response, time.perf_counter() - t0
