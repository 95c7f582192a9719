"""Docs as tests: every shell command in README.md and docs/*.md runs as written.

Commands are taken from fenced blocks marked ```bash or ```sh; a line ending in `\\` continues
on the next, a here-document (`<<'EOF'` ... `EOF`) belongs to the command that opens it, and
blank lines and `#` comments are not commands. A line that only sets variables (`W=/tmp/x`,
`export A=b`) is not run on its own: it is put before every later command of its block, so
that the block behaves as if typed into one shell. A block in any other language (or none)
must not hold shell commands: `test_shell_blocks_are_tagged` fails on one that does.

An HTML comment on the line right before the fence says how the block's commands are checked
(one marker for all commands of the block):

    <!-- docs-test: skip (reason) -->          not run; the reason must be given
    <!-- docs-test: error "text" (reason) -->  run; must exit non-zero, print `text` on stderr,
                                               and neither a traceback nor a usage error
                                               (`error "text" slow (reason)`: only under `-m slow`)
    <!-- docs-test: slow -->                   run and must exit 0, only under `-m slow`
    <!-- docs-test: synopsis -->               a command's options, not a command: every
                                               option shown must exist, and a number shown
                                               after one must be its default in `--help`

Unmarked commands run and must exit 0, with nothing on stderr that reads as an error.
A run or slow marker may add what the block's last command must leave behind:
`creates "PATH"` (a file, relative to the block's directory) and `prints "TEXT"` (on stdout
or stderr), e.g. `<!-- docs-test: slow creates "run/saerad/aggregate.json" -->`.

Each command runs with `bash -c` in a temporary directory shared by the commands of its
block, which holds copies of the repository's `configs/` and `results/` and links to its
`scripts/` and `benchmarks/` (so commands written for the repository root work), with the
repository's venv first on PATH and SAERAD_BENCH_CACHE pointing at the user's cache (the
phantom dataset and its tokens are reused, while run directories land in the temporary
directory). Processes a command leaves in the background (a server) are ended when the
module's tests end. Test ids are `<file>:<line>`.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TIMEOUT_S = 900
COPIED = ("configs", "results")  # commands may write beside these (a new baseline)
LINKED = ("scripts", "benchmarks")

_FENCE_OPEN = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
_FENCE_CLOSE = re.compile(r"^\s*```\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
_ASSIGNMENT = re.compile(r"^(export\s+)?[A-Za-z_]\w*=\S*(\s+[A-Za-z_]\w*=\S*)*\s*(#.*)?$")
SHELL_LANGS = ("bash", "sh")
# First words that make a line in an untagged block a shell command
_COMMAND_START = re.compile(
    r"^\s*(\$\s+)?((\w+=\S+\s+)*(bench|python3?(\.\d+)?|pip|hf|vllm|curl|export|cd|scripts/\S+|~/\S+|\.venv/\S+)"
    r"(\s|$))")


@dataclass(frozen=True)
class Marker:
    kind: str  # run | skip | error | slow | synopsis
    reason: str = ""  # skip: why
    text: str = ""  # error: expected on stderr
    creates: tuple[str, ...] = ()
    prints: tuple[str, ...] = ()
    slow: bool = False  # run only under `-m slow`


@dataclass(frozen=True)
class Command:
    file: str  # relative to the repository
    line: int  # 1-based line of the command's first line
    block: int  # 1-based line of the block's opening fence
    text: str
    marker: Marker
    setup: tuple[str, ...] = ()  # assignments made earlier in the block
    last: bool = False  # the block's last command: where creates/prints are checked

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def script(self) -> str:
        return "\n".join([*self.setup, self.text])


@dataclass
class Block:
    file: str
    line: int  # of the opening fence
    lang: str
    marker: Marker | None
    lines: list[tuple[int, str]] = field(default_factory=list)  # (1-based line, text)


def _expectations(rest: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """creates/prints clauses of a run or slow marker; returns what is left unparsed."""
    creates = tuple(re.findall(r'creates\s+"([^"]+)"', rest))
    prints = tuple(re.findall(r'prints\s+"([^"]+)"', rest))
    left = re.sub(r'(creates|prints)\s+"[^"]+"', "", rest)
    left = re.sub(r"^\s*\(.*\)\s*$", "", left)  # an optional reason
    return creates, prints, left.strip()


def parse_marker(body: str) -> Marker:
    """The marker's text after `docs-test:`; ValueError when it is not one of the forms."""
    if m := re.fullmatch(r"skip\s*\((.*)\)", body):
        return Marker("skip", reason=m.group(1).strip())
    if body == "skip":
        return Marker("skip")  # reason missing: the test for it fails
    if m := re.fullmatch(r'error\s+"([^"]*)"(\s+slow)?(?:\s*\(.*\))?', body):
        return Marker("error", text=m.group(1), slow=bool(m.group(2)))
    if body == "synopsis":
        return Marker("synopsis")
    if m := re.fullmatch(r"(run|slow)\b(.*)", body):
        creates, prints, left = _expectations(m.group(2))
        if left:
            raise ValueError(f"unknown docs-test marker clause: {left!r}")
        return Marker(m.group(1), creates=creates, prints=prints, slow=m.group(1) == "slow")
    raise ValueError(f"unknown docs-test marker: {body!r}")


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a markdown file, with its language and marker."""
    rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        marker = None
        if i > 0 and (mm := _MARKER.match(lines[i - 1])):
            marker = parse_marker(mm.group(1))
        block = Block(rel, i + 1, m.group(1).lower(), marker)
        i += 1
        while i < len(lines) and not _FENCE_CLOSE.match(lines[i]):
            block.lines.append((i + 1, lines[i]))
            i += 1
        out.append(block)
        i += 1
    return out


def commands_of(block: Block) -> list[Command]:
    marker = block.marker or Marker("run")
    commands: list[Command] = []
    setup: list[str] = []
    lines = block.lines
    i = 0
    while i < len(lines):
        start, line = lines[i]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        parts = [line]
        while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i][1])
        if h := _HEREDOC.search("\n".join(parts)):
            end = h.group(2)
            while i + 1 < len(lines) and lines[i][1].strip() != end:
                i += 1
                parts.append(lines[i][1])
        text = "\n".join(parts)
        if marker.kind == "synopsis" and line[:1].isspace() and commands:
            # an indented line of a synopsis continues the command above it
            prev = commands[-1]
            commands[-1] = replace(prev, text=f"{prev.text}\n{text}")
        elif _ASSIGNMENT.match(text) and marker.kind != "synopsis":
            setup.append(text)
        else:
            commands.append(Command(block.file, start, block.line, text, marker, tuple(setup)))
        i += 1
    if commands:
        commands[-1] = replace(commands[-1], last=True)
    return commands


def extract(path: Path) -> list[Command]:
    return [c for b in blocks(path) if b.lang in SHELL_LANGS for c in commands_of(b)]


BLOCKS = [b for doc in DOCS for b in blocks(doc)]
COMMANDS = [c for b in BLOCKS if b.lang in SHELL_LANGS for c in commands_of(b)]
RUNNABLE = [c for c in COMMANDS if c.marker.kind != "synopsis"]
SYNOPSES = [c for c in COMMANDS if c.marker.kind == "synopsis"]


def _param(c: Command):
    marks = [pytest.mark.slow] if c.marker.slow else []
    return pytest.param(c, id=c.id, marks=marks)


def _prepare(d: Path) -> None:
    for name in COPIED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, d / name)
    for name in LINKED:
        if (REPO / name).is_dir():
            (d / name).symlink_to(REPO / name, target_is_directory=True)


@pytest.fixture(scope="module")
def block_dirs(tmp_path_factory):
    dirs: dict[tuple[str, int], Path] = {}

    def get(c: Command) -> Path:
        key = (c.file, c.block)
        if key not in dirs:
            dirs[key] = tmp_path_factory.mktemp(re.sub(r"\W", "_", f"{c.file}_{c.block}"))
            _prepare(dirs[key])
        return dirs[key]

    return get


@pytest.fixture(scope="module")
def sessions():
    """Process groups of the commands run; what they left running is ended at the end."""
    started: list[int] = []
    yield started
    for pgid in started:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass


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
    env["COLUMNS"] = "200"  # tables and one-line errors are not wrapped into other lines
    return env


def _error_lines(stderr: str) -> list[str]:
    """Lines of stderr that report a failure: what must not follow an exit code of 0."""
    return [ln for ln in stderr.splitlines()
            if re.match(r"^\s*(internal error|error|usage error|Traceback)\b", ln)]


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
                fence = _FENCE_OPEN.match(lines[n + 1]) if n + 1 < len(lines) else None
                assert fence and fence.group(1).lower() in SHELL_LANGS, (
                    f"{where}: docs-test marker not directly before a bash/sh block"
                )
                parse_marker(m.group(1))
            elif "docs-test" in line and "<!--" in line:
                pytest.fail(f"{doc.relative_to(REPO)}:{n + 1}: malformed docs-test marker")


def test_fences_well_formed():
    """A fence with text after it is neither an opening nor a closing one: the blocks after it
    would be read inside out."""
    for doc in DOCS:
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines()):
            if line.lstrip().startswith("```"):
                assert _FENCE_OPEN.match(line), f"{doc.relative_to(REPO)}:{n + 1}: malformed fence {line!r}"


def test_shell_blocks_are_tagged():
    """A block of shell commands in another language (or none) would escape the test."""
    offenders = []
    for b in BLOCKS:
        if b.lang in SHELL_LANGS:
            continue
        for n, line in b.lines:
            if _COMMAND_START.match(line):
                offenders.append(f"{b.file}:{n}: {line.strip()[:80]}")
                break
    assert not offenders, ("shell commands in a block not tagged ```bash (tag it, and add a docs-test "
                           "marker if it cannot run as written):\n" + "\n".join(offenders))


def test_extraction_rules(tmp_path):
    """Continuations, here-documents, assignments carried forward, markers, the last command."""
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "<!-- docs-test: slow creates \"out.txt\" prints \"done\" -->",
        "```bash",
        "# a comment",
        "W=/tmp/w",
        "export A=1 B=2",
        "bench run --system nn \\",
        "  --out $W",
        "python - <<'EOF'",
        "print('x')",
        "EOF",
        "```",
        "",
        "```text",
        "not a command",
        "```",
        "<!-- docs-test: error \"missing\" slow (why) -->",
        "```sh",
        "false",
        "```",
    ]) + "\n")
    bs = blocks(page)
    assert [b.lang for b in bs] == ["bash", "text", "sh"]
    first = commands_of(bs[0])
    assert [c.line for c in first] == [6, 8]
    assert first[0].text == "bench run --system nn \\\n  --out $W"
    assert first[0].setup == ("W=/tmp/w", "export A=1 B=2")
    assert first[1].text == "python - <<'EOF'\nprint('x')\nEOF"
    assert [c.last for c in first] == [False, True]
    assert first[0].marker == Marker("slow", creates=("out.txt",), prints=("done",), slow=True)
    assert commands_of(bs[2])[0].marker == Marker("error", text="missing", slow=True)
    with pytest.raises(ValueError):
        parse_marker("run sometimes")
    assert parse_marker("skip") == Marker("skip")  # no reason: test_doc_command fails it


def test_expectations_on_last_command_only():
    for c in COMMANDS:
        if c.marker.creates or c.marker.prints:
            assert c.marker.kind in ("run", "slow")


@pytest.mark.parametrize("cmd", [_param(c) for c in RUNNABLE])
def test_doc_command(cmd: Command, block_dirs, sessions):
    marker = cmd.marker
    if marker.kind == "skip":
        assert marker.reason, f"{cmd.id}: docs-test skip needs a reason in parentheses"
        pytest.skip(f"docs-test skip: {marker.reason}")
    cwd = block_dirs(cmd)
    proc = subprocess.Popen(["bash", "-c", cmd.script], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    sessions.append(proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{cmd.id}: still running after {TIMEOUT_S} s\n$ {cmd.text}")
    report = (f"$ {cmd.text}\n--- exit {proc.returncode}\n--- stdout\n{stdout[-3000:]}\n"
              f"--- stderr\n{stderr[-3000:]}")
    if marker.kind == "error":
        assert proc.returncode != 0, f"{cmd.id}: expected a failure\n{report}"
        assert marker.text in stderr, f"{cmd.id}: {marker.text!r} not on stderr\n{report}"
        assert "Traceback" not in stderr, f"{cmd.id}: traceback\n{report}"
        assert "usage error" not in stderr, f"{cmd.id}: the command is malformed\n{report}"
        return
    assert proc.returncode == 0, f"{cmd.id}: non-zero exit\n{report}"
    assert not _error_lines(stderr), f"{cmd.id}: exit 0 after an error\n{report}"
    if cmd.last:
        for rel in marker.creates:
            assert (cwd / rel).exists(), f"{cmd.id}: {rel} was not created\n{report}"
        for text in marker.prints:
            assert text in stdout + stderr, f"{cmd.id}: {text!r} not printed\n{report}"


# -- synopses: the options a page shows exist, and the defaults it shows are the real ones --------

@functools.cache
def _bench_root():
    import typer

    from bench.cli import build_app

    return typer.main.get_command(build_app())


def _bench_command(words: list[str]):
    """The click command for `bench w1 w2 ...` and the words after its name."""
    cmd = _bench_root()
    rest = list(words)
    while rest and hasattr(cmd, "get_command"):
        ctx = cmd.make_context("bench", [], resilient_parsing=True)
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            break
        cmd, rest = sub, rest[1:]
    return cmd, rest


def _shown_default(param) -> str | None:
    if param.default is not None and not callable(param.default) and not isinstance(param.default, (list, tuple)):
        return str(param.default)
    if m := re.search(r"default:?\s+([-+0-9.eE]+)", param.help or ""):
        return m.group(1)
    return None


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def _option_pairs(text: str) -> list[tuple[str, str | None]]:
    """(--flag, the word after it or None) for each option of a synopsis line."""
    pairs = []
    for m in re.finditer(r"(--[\w-]+)(?:[ =]([^\s\[\]|]+))?", text):
        value = m.group(2)
        pairs.append((m.group(1), None if value is None or value.startswith("-") else value))
    return pairs


def synopsis_problems(text: str) -> list[str]:
    """What a synopsis line claims that `--help` does not: unknown options, other defaults."""
    words = text.replace("\\\n", " ").split()
    if words[0] != "bench":
        return [f"a synopsis shows `bench ...` commands, not {words[0]}"]
    click_cmd, _ = _bench_command(words[1:])
    params = {opt: p for p in click_cmd.params for opt in [*p.opts, *p.secondary_opts]}
    problems = []
    for flag, value in _option_pairs(text):
        param = params.get(flag)
        if param is None:
            problems.append(f"{flag} is not an option of `{' '.join(words[:3])}`")
            continue
        if value is not None and re.fullmatch(r"[-+]?[0-9.]+(e[-+]?\d+)?", value):
            shown = _shown_default(param)
            if shown is None or not _same_number(shown, value):
                problems.append(f"{flag} {value}: --help gives the default as {shown}")
    return problems


@pytest.mark.parametrize("cmd", [pytest.param(c, id=c.id) for c in SYNOPSES])
def test_synopsis(cmd: Command):
    problems = synopsis_problems(cmd.text)
    assert not problems, f"{cmd.id}:\n" + "\n".join(problems)


def test_synopsis_check_finds_wrong_claims():
    """The check itself: a wrong default, an option that does not exist, a default --help
    does not state, all found; the real defaults pass."""
    assert synopsis_problems("bench sae bench [--batch 2048] [--l0 15] [--json]") == []
    wrong = synopsis_problems("bench sae bench [--batch 1024] [--no-such-option]")
    assert any("--batch 1024" in p and "2048" in p for p in wrong)
    assert any("--no-such-option" in p for p in wrong)
    # --device has no numeric default; --steps' default is stated in its help text
    assert synopsis_problems("bench sae train --out DIR [--steps 200000] [--lr 5e-5]") == []
    assert synopsis_problems("bench sae train --out DIR [--steps 1000]") != []
    assert synopsis_problems("bench sae train --out DIR [--target-l0 15]") != []  # no default to match


def test_rger_install_line_is_the_documented_one():
    """The remedy RGER prints installs what docs/metrics-rger.md says radgraph needs."""
    from bench.metrics.radgraph.annotator import INSTALL_REQUIREMENTS

    assert "transformers" in INSTALL_REQUIREMENTS and "<5" in INSTALL_REQUIREMENTS
    for doc in (REPO / "docs" / "metrics-rger.md", REPO / "README.md"):
        assert f"pip install {INSTALL_REQUIREMENTS}" in doc.read_text(encoding="utf-8"), doc.name
