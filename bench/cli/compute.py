"""`bench compute`: the paper's compute table (Appendix F) for run directories, beside the quoted figures."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.errors import BenchError


def register(app: typer.Typer) -> None:
    app.command("compute", help="Parameters, FLOPs, wall time and LLM tokens per report of runs (measured), "
                                "beside the figures the SAE-Rad paper quotes for SAE-Rad, CheXagent and MAIRA-2.")(compute)


def compute(
    run: Optional[list[Path]] = typer.Option(None, "--run", help="run directory (repeatable)"),
    runs: Optional[Path] = typer.Option(None, "--runs", help="parent directory: every run under it"),
    format: str = typer.Option("md", "--format", "-f", help="md | json"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to a file instead of stdout"),
) -> None:
    from bench.cli.common import console
    from bench.compute import compute_table, find_runs, render_json, render_md

    if format not in ("md", "json"):
        raise BenchError(f"unknown format {format!r}; choose one of: md, json")
    dirs = list(run or []) + (find_runs(runs) if runs else [])
    cols = compute_table(dirs)
    text = render_md(cols) if format == "md" else render_json(cols)
    if output:
        output.write_text(text)
        console.print(f"written to {output}")
    else:
        print(text, end="")
