"""`bench env create|list|remove`: virtual environments for systems with their own dependencies."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from bench.cli.common import console
from bench.errors import BenchError

app = typer.Typer(no_args_is_help=True, help=(
    "Virtual environments for systems whose dependencies cannot share the harness's "
    "(CheXagent, MAIRA-2, your own model); kept in $SAERAD_BENCH_CACHE/envs."))


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="env")


@app.command("create")
def create(
    name: str = typer.Argument(..., help="a system's name (its pinned requirements are used) or any name with -r"),
    requirements: Optional[Path] = typer.Option(None, "--requirements", "-r",
                                                help="requirements file (default: the one kept beside the system's adapter)"),
    python: Optional[str] = typer.Option(None, "--python", help="interpreter to build with, e.g. python3.10 "
                                                                "(default: the harness's own)"),
    replace: bool = typer.Option(False, "--replace", help="rebuild an environment that exists"),
) -> None:
    """Build a virtual environment from pinned requirements and record it."""
    from bench.systems.environments import Environments

    reqs = requirements or _system_requirements(name)
    rec = Environments().create(name, reqs, python=python, replace=replace)
    console.print(f"environment [bold]{rec.name}[/bold]: {rec.path} (Python {rec.python_version}, "
                  f"{len(rec.packages)} packages from {rec.requirements})", highlight=False)


@app.command("list")
def list_() -> None:
    """The recorded environments."""
    from bench.systems.environments import Environments

    envs = Environments()
    records = envs.records()
    if not records:
        console.print(f"no environments in {envs.root}; make one with `bench env create NAME`", highlight=False)
        return
    t = Table("name", "python", "transformers", "torch", "packages", "path")
    for rec in records.values():
        there = Path(rec.python).exists()
        key = {p.lower(): v for p, v in rec.packages.items()}
        t.add_row(rec.name, rec.python_version, key.get("transformers", "-"), key.get("torch", "-"),
                  str(len(rec.packages)), rec.path if there else f"[red]missing[/red] {rec.path}")
    Console().print(t)


@app.command("remove")
def remove(name: str = typer.Argument(..., help="the environment to delete")) -> None:
    """Delete an environment and its record."""
    from bench.systems.environments import Environments

    rec = Environments().remove(name)
    console.print(f"removed environment {rec.name} ({rec.path})", highlight=False)


def _system_requirements(name: str) -> Path:
    from bench.systems.registry import system_class, system_names

    if name not in system_names():
        raise BenchError(f"{name!r} is not a registered system; give its requirements with -r FILE")
    reqs = system_class(name).requirements
    if reqs is None:
        with_reqs = [n for n in system_names() if _has_requirements(n)]
        raise BenchError(f"system {name!r} runs in the harness's environment and keeps no requirements file; "
                         f"systems that do: {', '.join(with_reqs) or 'none'} (or give -r FILE)")
    return Path(reqs)


def _has_requirements(name: str) -> bool:
    from bench.systems.registry import system_class

    try:
        return system_class(name).requirements is not None
    except BenchError:
        return False
