"""Virtual environments for systems whose dependencies cannot share the harness's.

CheXagent-2-3b's remote code asserts transformers 4.40.0 and MAIRA-2 needs transformers
>=4.48,<4.52: neither can live beside the harness's own transformers. Such a system keeps a
pinned requirements file beside its adapter; `bench env create NAME` builds a virtual
environment from it and records it, and the system runs its command there through the
ReXrank contract (`CMD <input_json> <output_json> <img_root>`).

Environments live in `<cache root>/envs/<name>/` ($SAERAD_BENCH_CACHE, default
~/.cache/saerad-bench), and `<cache root>/envs/environments.json` records each one: where it
is, its interpreter and Python version, the requirements file and its hash, and what pip
installed (so a run's manifest says exactly which packages made its predictions).

A creation is built in a scratch directory and moved into place only when pip succeeded:
one that fails half-way leaves nothing behind, and the error names the requirement pip
could not install.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from bench.data.default import cache_root
from bench.errors import BenchError

log = logging.getLogger(__name__)

REGISTRY = "environments.json"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class EnvRecord:
    name: str
    path: str  # the environment's directory
    python: str  # its interpreter
    python_version: str
    base_python: str  # the interpreter it was made with (--python)
    requirements: str  # the requirements file it was built from
    requirements_sha256: str
    created: str
    packages: dict[str, str] = field(default_factory=dict)  # what pip installed: name -> version

    def summary(self) -> dict:
        """What a run's manifest keeps of it: enough to rebuild it, or to see it changed."""
        return {"name": self.name, "python_version": self.python_version,
                "requirements": self.requirements, "requirements_sha256": self.requirements_sha256,
                "packages": self.packages}

    def run_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Process environment variables that make a command run inside this environment:
        its bin/ first on PATH (so `python` is its interpreter), VIRTUAL_ENV set, and none of
        the harness's own Python path settings leaking in."""
        env = dict(os.environ if base is None else base)
        for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            env.pop(key, None)
        env["VIRTUAL_ENV"] = self.path
        env["PATH"] = str(Path(self.python).parent) + os.pathsep + env.get("PATH", "")
        return env


class Environments:
    """The environments recorded under one root (default: <cache root>/envs)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_root() / "envs"

    # -- reading -----------------------------------------------------------
    @property
    def registry_path(self) -> Path:
        return self.root / REGISTRY

    def records(self) -> dict[str, EnvRecord]:
        if not self.registry_path.exists():
            return {}
        try:
            raw = json.loads(self.registry_path.read_text())
            return {name: EnvRecord(**rec) for name, rec in raw.get("environments", {}).items()}
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise BenchError(f"the environment registry {self.registry_path} is damaged ({exc}); delete it "
                             f"and the directories beside it, then create the environments again") from None

    def get(self, name: str) -> EnvRecord:
        """The environment `name`, checked to be still there; a BenchError saying how to make it."""
        records = self.records()
        if name not in records:
            known = f" (recorded: {', '.join(sorted(records))})" if records else ""
            raise BenchError(f"no environment {name!r} in {self.root}{known}; create it with "
                             f"`bench env create {name}`")
        rec = records[name]
        if not Path(rec.python).exists():
            raise BenchError(f"environment {name!r} is recorded but its interpreter {rec.python} is gone; "
                             f"rebuild it with `bench env create {name} --replace`")
        return rec

    # -- changing ----------------------------------------------------------
    def create(self, name: str, requirements: Path, python: str | None = None, replace: bool = False) -> EnvRecord:
        if not NAME_RE.fullmatch(name):
            raise BenchError(f"environment name {name!r}: use letters, digits and . _ - (it names a directory)")
        requirements = Path(requirements).expanduser().resolve()
        if not requirements.is_file():
            raise BenchError(f"requirements file {requirements} does not exist")
        base = resolve_python(python)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            existing = self.records().get(name)
            if existing is not None and not replace:
                raise BenchError(f"environment {name!r} exists ({existing.path}, made {existing.created}); "
                                 f"use --replace to rebuild it, or `bench env remove {name}` first")
            final = self.root / name
            if existing is None and final.exists():
                raise BenchError(f"{final} exists but is not a recorded environment; remove it or choose another name")
            build = self.root / f".building-{name}-{os.getpid()}"
            logs = self.root / "logs"
            logs.mkdir(exist_ok=True)
            log_path = logs / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
            try:
                rec = _build(name, build, final, requirements, base, log_path)
            except BaseException:
                shutil.rmtree(build, ignore_errors=True)  # a half-made environment is never kept
                raise
            if final.exists():
                shutil.rmtree(final)
            # Interpreter paths inside a venv are absolute: build it where it will live.
            build.rename(final)
            self._write({**self.records(), name: rec})
        log.info("environment %s ready: %s (Python %s, %d packages)", name, rec.path, rec.python_version,
                 len(rec.packages))
        return rec

    def remove(self, name: str) -> EnvRecord:
        with self._locked():
            records = self.records()
            if name not in records:
                known = ", ".join(sorted(records)) or "none"
                raise BenchError(f"no environment {name!r} to remove (recorded: {known})")
            rec = records.pop(name)
            shutil.rmtree(rec.path, ignore_errors=True)
            self._write(records)
        return rec

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer of the registry at a time (two `bench env create` running together)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another bench env command (a build takes minutes): say why we wait
                log.info("waiting for another `bench env` command on %s to finish", self.root)
                fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _write(self, records: dict[str, EnvRecord]) -> None:
        tmp = self.registry_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"environments": {n: asdict(r) for n, r in sorted(records.items())}}, indent=2) + "\n")
        os.replace(tmp, self.registry_path)


def resolve_python(python: str | None) -> str:
    """The interpreter to build with: --python as a path or a command name; default the harness's own."""
    if not python:
        return sys.executable
    found = shutil.which(python) or (python if Path(python).is_file() else None)
    if found is None:
        raise BenchError(f"--python {python}: no such interpreter (give a path or a command on PATH, e.g. python3.10)")
    return found


def _build(name: str, build: Path, final: Path, requirements: Path, base: str, log_path: Path) -> EnvRecord:
    with open(log_path, "w") as log_file:
        def step(argv: list[str], what: str) -> subprocess.CompletedProcess:
            log.info("%s: %s", name, what)
            log_file.write(f"$ {' '.join(argv)}\n")
            log_file.flush()
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            log_file.write(proc.stdout)
            log_file.flush()
            return proc

        # The harness's own pip installs into the new environment (pip --python): bootstrapping
        # a pip of its own (ensurepip) would take longer than installing a small requirements file.
        own_pip = _pip_can_target()
        made = step([base, "-m", "venv", *(["--without-pip"] if own_pip else []), str(build)],
                    f"making a virtual environment with {base}")
        if made.returncode != 0:
            raise BenchError(f"environment {name}: {base} -m venv failed: {_last_error(made.stdout)} (log: {log_path})")
        py = build / "bin" / "python"
        pip = [sys.executable, "-m", "pip", "--python", str(py)] if own_pip else [str(py), "-m", "pip"]
        installed = step([*pip, "install", "--no-input", "-r", str(requirements)],
                         f"installing {requirements} (pip; this can take minutes)")
        if installed.returncode != 0:
            culprit = failing_requirement(installed.stdout, requirements.read_text().splitlines())
            raise BenchError(f"environment {name} was not created: pip could not install {culprit} from "
                             f"{requirements}: {_last_error(installed.stdout)} (nothing was kept; full log: {log_path})")
        version = step([str(py), "-c", "import platform; print(platform.python_version())"], "reading its version")
        frozen = step([*pip, "list", "--format=json"], "listing what pip installed")
    packages = {p["name"]: p["version"] for p in json.loads(frozen.stdout or "[]")} if frozen.returncode == 0 else {}
    return EnvRecord(name=name, path=str(final), python=str(final / "bin" / "python"),
                     python_version=version.stdout.strip(), base_python=base, requirements=str(requirements),
                     requirements_sha256=hashlib.sha256(requirements.read_bytes()).hexdigest(),
                     created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), packages=packages)


def _pip_can_target() -> bool:
    """Whether the harness's pip can install into another interpreter (`--python`, pip >= 22.3)."""
    if importlib.util.find_spec("pip") is None:
        return False
    from importlib.metadata import version

    try:
        major, minor = (int(x) for x in version("pip").split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (22, 3)


# What pip says about the requirement it could not install, most specific first.
_PIP_CULPRITS = [
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
    re.compile(r"Invalid requirement: '([^']+)'"),
    re.compile(r"Wheel '([^']+)' located at \S+ is invalid"),
    re.compile(r"Could not install requirement (\S+) because"),
    re.compile(r"Failed building wheel for (\S+)"),
    re.compile(r"Failed to build (\S+)"),
    re.compile(r"Cannot install (.+?) because these package versions have conflicting dependencies"),
    re.compile(r"Requirement '([^']+)' looks like a filename, but the file does not exist"),
    re.compile(r"No such file or directory: '([^']+)'"),
]


def failing_requirement(pip_output: str, requirement_lines: list[str]) -> str:
    """The requirement pip failed on, as written in the requirements file where it can be
    matched (with its line number), else as pip named it; 'a requirement' when pip named none."""
    for pattern in _PIP_CULPRITS:
        m = pattern.search(pip_output)
        if m:
            return _as_written(m.group(1).strip(), requirement_lines)
    # pip names the line it was processing: "Processing ./x.whl (from -r reqs.txt (line 3))"
    lines = re.findall(r"\(line (\d+)\)", pip_output)
    if lines and 0 < int(lines[-1]) <= len(requirement_lines):
        n = int(lines[-1])
        return f"{requirement_lines[n - 1].split('#', 1)[0].strip()!r} (line {n})"
    return "a requirement"


def _as_written(named: str, lines: list[str]) -> str:
    key = _project(named)
    for i, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text and (named in text or (key and _project(text) == key)):
            return f"{text!r} (line {i})"
    return repr(named)


def _project(req: str) -> str:
    """The normalised project name of a requirement, also of a wheel or sdist file path."""
    name = Path(req).name if re.search(r"\.(whl|tar\.gz|zip)$", req) else req
    if name != req:  # a file: the project is the part of its name before the version
        name = name.split("-", 1)[0]
    head = re.split(r"[<>=!~;\[ @]", name, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", head).lower().strip()


def _last_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors[-1] if errors else lines[-1] if lines else "no output")[:400]
