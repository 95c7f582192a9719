"""Running a system's command under watch: time limits, its stderr in our log, a clean stop.

An external system is a process we do not control, so the harness watches it:
- a whole-run limit (`timeout`): the command is stopped when it runs longer;
- a per-sample limit (`sample_timeout`): a command that writes its output as it goes (our
  adapters rewrite the output file after every batch) is stopped when no new sample appears
  in its output for `sample_timeout` x `batch_size` seconds; before its first output it gets
  `startup_timeout` more (loading a model takes minutes). A command that writes its output
  only at the end cannot be watched this way: leave `sample_timeout` at 0 and use `timeout`.
- its stderr is streamed, line by line, to the log and to a file in the run directory, so
  progress and errors are seen as they happen (carriage-return progress bars included);
- a stop (limit, Ctrl-C, an error of ours) ends the command's whole process group.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from bench.errors import BenchError

log = logging.getLogger(__name__)

POLL_S = 0.2
GRACE_S = 5.0  # between SIGTERM and SIGKILL


class CommandFailed(BenchError):
    """The command exited with an error, could not start, or was stopped."""


class CommandTimedOut(CommandFailed):
    """The command was stopped by a time limit."""


@dataclass(frozen=True)
class Limits:
    timeout: float | None = None  # seconds for the whole run
    sample_timeout: float | None = None  # seconds per sample, watched through the output
    startup_timeout: float = 0.0  # extra seconds before the first output
    batch_size: int = 1  # samples the command finishes at a time

    def stall_window(self, started: bool) -> float | None:
        if not self.sample_timeout:
            return None
        return self.sample_timeout * max(1, self.batch_size) + (0.0 if started else self.startup_timeout)


def run_watched(argv: Sequence[str], *, label: str, log_dir: Path, limits: Limits,
                progress: Callable[[], int] | None = None, env: dict[str, str] | None = None) -> float:
    """Run `argv` to the end under `limits`; returns its wall time. Raises CommandFailed
    (exit status, a one-line reason from its stderr) or CommandTimedOut (which limit)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = log_dir / "stderr.log"
    tail: collections.deque[str] = collections.deque(maxlen=40)
    t0 = time.monotonic()
    with open(log_dir / "stdout.log", "ab") as so, open(stderr_path, "ab") as se:
        try:
            proc = subprocess.Popen(list(argv), stdout=so, stderr=subprocess.PIPE, env=env,
                                    start_new_session=True)  # its own process group: we stop all of it
        except (FileNotFoundError, PermissionError) as exc:
            raise CommandFailed(f"{label}: cannot run {argv[0]!r} ({exc})") from exc
        reader = threading.Thread(target=_stream, args=(proc.stderr, se, tail, label), daemon=True)
        reader.start()
        try:
            _watch(proc, label, limits, progress, t0, stderr_path)
        finally:
            if proc.poll() is None:
                _stop(proc)
            reader.join(timeout=10)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        why = re.sub(rf"^error:\s*(?:{re.escape(label)}:\s*)?", "", _reason(tail))  # its own prefix, once is enough
        raise CommandFailed(f"{label} exited with {_status(proc.returncode)}"
                            + (f": {why}" if why else "") + f" (its stderr: {stderr_path})")
    return wall


def _watch(proc: subprocess.Popen, label: str, limits: Limits, progress: Callable[[], int] | None,
           t0: float, stderr_path: Path) -> None:
    done = progress() if progress else 0
    started = False
    last = t0
    while proc.poll() is None:
        time.sleep(POLL_S)
        now = time.monotonic()
        if limits.timeout and now - t0 > limits.timeout:
            raise CommandTimedOut(f"{label} ran past its whole-run limit of {limits.timeout:g}s and was stopped "
                                  f"(its stderr: {stderr_path})")
        if progress is None:
            continue
        n = progress()
        if n > done:
            done, started, last = n, True, now
            continue
        window = limits.stall_window(started)
        if window is not None and now - last > window:
            what = (f"{limits.sample_timeout:g}s per sample x batch of {limits.batch_size}"
                    + ("" if started else f" + {limits.startup_timeout:g}s to start"))
            raise CommandTimedOut(f"{label} wrote no new sample for {now - last:.0f}s ({what}) and was stopped "
                                  f"(its stderr: {stderr_path})")


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


_SPLIT = re.compile(rb"\r\n|\r|\n")


def _stream(pipe, sink, tail: collections.deque, label: str) -> None:
    """Copy the command's stderr to `sink` and the log, a line at a time; a progress bar's
    carriage returns end lines too, so its updates are seen as they come."""
    pending = b""
    for chunk in iter(lambda: pipe.read1(65536), b""):
        sink.write(chunk)
        sink.flush()
        parts = _SPLIT.split(pending + chunk)
        pending = parts.pop()
        for raw in parts:
            _emit(raw, tail, label)
    if pending:
        _emit(pending, tail, label)


def _emit(raw: bytes, tail: collections.deque, label: str) -> None:
    line = raw.decode("utf-8", errors="replace").rstrip()
    if line:
        tail.append(line)
        log.info("[%s] %s", label, line)


def _reason(tail: collections.deque) -> str:
    """One line saying why it failed: an `error:` line of its own if it printed one (our
    adapters do), else its last line of stderr."""
    lines = list(tail)
    for line in reversed(lines):
        if line.lower().startswith("error:") or re.match(r"^\w*(Error|Exception)\b", line):
            return line[:1500]
    return lines[-1][:1500] if lines else ""


def _status(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return str(rc)
