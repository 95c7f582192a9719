"""Docs as tests: every shell command in README.md and docs/*.md runs as written.

Commands are taken from fenced blocks marked ```bash or ```sh; a line ending in `\\` continues
on the next, a here-document (`<<'EOF'` ... `EOF`) belongs to the command that opens it, and
blank lines and `#` comments are not commands. An HTML comment on the line right before the
fence says how the block's commands are checked (one marker for all commands of the block):

    <!-- docs-test: skip (reason) -->         not run; the reason must be given
    <!-- docs-test: error "text" -->          run; must exit non-zero, print `text` on stderr,
                                              and neither a traceback nor a usage error
    <!-- docs-test: slow -->                  run and must exit 0, only under `-m slow`

Unmarked commands run and must exit 0. Each command runs with `bash -c` in a temporary
directory shared by the commands of its block, with the repository's venv first on PATH and
SAERAD_BENCH_CACHE pointing at the user's cache (so the phantom dataset and its tokens are
reused, while run directories land in the temporary directory). Test ids are `<file>:<line>`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TIMEOUT_S = 600

_FENCE_OPEN = re.compile(r"^\s*```(bash|sh)\s*$")
_FENCE_CLOSE = re.compile(r"^\s*```\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")


@dataclass(frozen=True)
class Marker:
    kind: str  # run | skip | error | slow
    reason: str = ""  # skip: why
    text: str = ""  # error: expected on stderr


@dataclass(frozen=True)
class Command:
    file: str  # relative to the repository
    line: int  # 1-based line of the command's first line
    block: int  # 1-based line of the block's opening fence
    text: str
    marker: Marker

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def parse_marker(body: str) -> Marker:
    """The marker's text after `docs-test:`; ValueError when it is not one of the three forms."""
    if m := re.fullmatch(r"skip\s*\((.*)\)", body):
        return Marker("skip", reason=m.group(1).strip())
    if body == "skip":
        return Marker("skip")  # reason missing: the test for it fails
    if m := re.fullmatch(r'error\s+"([^"]*)"(?:\s*\(.*\))?', body):
        return Marker("error", text=m.group(1))
    if body == "slow" or re.fullmatch(r"slow\s*\(.*\)", body):
        return Marker("slow")
    raise ValueError(f"unknown docs-test marker: {body!r}")


def extract(path: Path) -> list[Command]:
    rel = path.relative_to(REPO).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        if not _FENCE_OPEN.match(lines[i]):
            i += 1
            continue
        fence = i + 1
        marker = Marker("run")
        if i > 0 and (m := _MARKER.match(lines[i - 1])):
            marker = parse_marker(m.group(1))
        i += 1
        while i < len(lines) and not _FENCE_CLOSE.match(lines[i]):
            line = lines[i]
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                i += 1
                continue
            start = i + 1
            parts = [line]
            while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                parts.append(lines[i])
            if h := _HEREDOC.search("\n".join(parts)):
                end = h.group(2)
                while i + 1 < len(lines) and lines[i].strip() != end:
                    i += 1
                    parts.append(lines[i])
            commands.append(Command(rel, start, fence, "\n".join(parts), marker))
            i += 1
        i += 1
    return commands


COMMANDS = [c for doc in DOCS for c in extract(doc)]


def _param(c: Command):
    marks = [pytest.mark.slow] if c.marker.kind == "slow" else []
    return pytest.param(c, id=c.id, marks=marks)


@pytest.fixture(scope="module")
def block_dirs(tmp_path_factory):
    dirs: dict[tuple[str, int], Path] = {}

    def get(c: Command) -> Path:
        key = (c.file, c.block)
        if key not in dirs:
            dirs[key] = tmp_path_factory.mktemp(re.sub(r"\W", "_", f"{c.file}_{c.block}"))
        return dirs[key]

    return get


def _env() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = REPO / ".venv" / "bin"
    bin_dir = venv_bin if venv_bin.is_dir() else Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    env.setdefault(
        "SAERAD_BENCH_CACHE", str(Path("~/.cache/saerad-bench").expanduser())
    )
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def test_commands_found():
    assert COMMANDS, "no ```bash/```sh commands found in README.md and docs/*.md"
    ids = [c.id for c in COMMANDS]
    assert len(ids) == len(set(ids))


def test_markers_well_formed():
    """Every docs-test comment stands right before a ```bash/```sh fence and parses."""
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if m := _MARKER.match(line):
                where = f"{doc.relative_to(REPO)}:{n + 1}"
                assert n + 1 < len(lines) and _FENCE_OPEN.match(lines[n + 1]), (
                    f"{where}: docs-test marker not directly before a bash/sh block"
                )
                parse_marker(m.group(1))
            elif "docs-test" in line and "<!--" in line:
                pytest.fail(f"{doc.relative_to(REPO)}:{n + 1}: malformed docs-test marker")


@pytest.mark.parametrize("cmd", [_param(c) for c in COMMANDS])
def test_doc_command(cmd: Command, block_dirs):
    marker = cmd.marker
    if marker.kind == "skip":
        assert marker.reason, f"{cmd.id}: docs-test skip needs a reason in parentheses"
        pytest.skip(f"docs-test skip: {marker.reason}")
    proc = subprocess.run(
        ["bash", "-c", cmd.text],
        cwd=block_dirs(cmd),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    report = f"$ {cmd.text}\n--- exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    if marker.kind == "error":
        assert proc.returncode != 0, f"{cmd.id}: expected a failure\n{report}"
        assert marker.text in proc.stderr, f"{cmd.id}: {marker.text!r} not on stderr\n{report}"
        assert "Traceback" not in proc.stderr, f"{cmd.id}: traceback\n{report}"
        assert "usage error" not in proc.stderr, f"{cmd.id}: the command is malformed\n{report}"
    else:
        assert proc.returncode == 0, f"{cmd.id}: non-zero exit\n{report}"
