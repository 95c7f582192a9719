"""`bench check`: the regression gate (bench/stages/check.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from bench.cli.common import console
from bench.errors import BenchError


def register(app: typer.Typer) -> None:
    app.command("check", help="Compare a scored run with a baseline file: exit 1 when a metric got worse "
                              "beyond noise, became unavailable, or was computed differently.")(check)


def check(
    run: Optional[Path] = typer.Option(None, "--run", help="the scored run directory to check (or to write "
                                       "the baseline from, with --update)"),
    baseline: Path = typer.Option(..., "--baseline", help="the baseline file (JSON)"),
    update: bool = typer.Option(False, "--update", help="write the baseline file from --run instead of checking"),
    calibrate: Optional[list[Path]] = typer.Option(None, "--calibrate", help="runs of one system with different "
                                                   "seeds (repeat): store tolerances from their spread"),
    level: float = typer.Option(0.01, help="significance level of the one-sided paired test"),
    permutations: int = typer.Option(10000, help="permutations of the paired test"),
    seed: int = typer.Option(0, help="seed of the paired test"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the verdicts as JSON"),
    junit: Optional[Path] = typer.Option(None, "--junit", help="also write the verdicts as JUnit XML"),
) -> None:
    from bench.stages import check as gate

    if calibrate:
        tol = gate.calibrate(calibrate, baseline)
        n = sum(len(v) for v in tol.values())
        console.print(f"[green]stored {n} tolerances ({gate.TOLERANCE_SDS} sd of {len(calibrate)} runs) in[/green] "
                      f"{baseline}")
        return
    if run is None:
        raise BenchError("give --run RUN (the scored run directory)")
    if update:
        gate.write_baseline(run, baseline)
        console.print(f"[green]baseline written to[/green] {baseline}")
        return
    report = gate.check_run(run, baseline, level, permutations, seed)
    t = Table(*gate.HEADERS, title=f"bench check {report.run} against {baseline} "
                                   f"(level {level}, {report.seconds:.1f} s)")
    for row in gate.table_rows(report):
        style = "red" if row[-1].startswith("FAIL") else None
        t.add_row(*row, style=style)
    Console().print(t)
    for v in report.verdicts:
        if v.failed and v.detail:
            console.print(f"[red]{v.metric}/{v.header}[/red]: {v.detail}")
    if json_out:
        gate.write_json_report(report, json_out)
    if junit:
        gate.write_junit(report, junit)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:  # GitHub Actions shows this file on the run's page
        with open(summary, "a") as fh:
            fh.write(gate.markdown(report))
    if report.failed:
        console.print(f"[red]check failed[/red]: {sum(v.failed for v in report.verdicts)} verdict(s) against "
                      f"{baseline}")
        raise typer.Exit(1)
    console.print(f"[green]check passed[/green] against {baseline}")
