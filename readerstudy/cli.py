"""`bench reader-study export | serve | import`: mounted by bench's CLI from the entry-point
group `saerad_bench.commands`. Errors are BenchErrors: one line, exit code 2."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Optional

import typer

from bench.cli.common import console, split_list
from bench.errors import BenchError

log = logging.getLogger(__name__)

app = typer.Typer(no_args_is_help=True, help="Reader studies: blinded sentence sheets, a reading page, statistics.")

# import name -> package, for the one-line message when the extra is missing
_NEEDS = {"openpyxl": "openpyxl", "starlette": "starlette", "jinja2": "jinja2", "uvicorn": "uvicorn",
          "statsmodels": "statsmodels", "krippendorff": "krippendorff"}


def need(*modules: str) -> None:
    missing = [_NEEDS.get(m, m) for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise BenchError(f"reader studies need {', '.join(missing)}, which is not installed; "
                         "run `pip install 'saerad-bench[reader-study]'`")


@app.command("export")
def export_cmd(
    runs: list[str] = typer.Option(..., "--runs", help="run directories, or a parent of run directories "
                                                      "(repeat --runs, or separate with commas)"),
    out: Path = typer.Option(..., "--out", help="new directory for the study"),
    n: int = typer.Option(30, "--n", help="studies to read"),
    readers: int = typer.Option(1, "--readers", help="number of readers"),
    reader_names: Optional[list[str]] = typer.Option(None, "--reader-names", help="names instead of reader1..K (comma list)"),
    seed: int = typer.Option(0, "--seed", help="seed of the selection and the blinding"),
    stratify: bool = typer.Option(False, "--stratify", help="half normal, half abnormal references"),
    reads_per_study: Optional[int] = typer.Option(None, "--reads-per-study",
                                                  help="readers per study (default: every reader reads every study)"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="cache root (default $SAERAD_BENCH_CACHE)"),
) -> None:
    """Select studies common to the runs, blind the systems and write a workbook per reader."""
    need("openpyxl")
    from readerstudy.export import ExportRequest, export

    names = split_list(reader_names) or None
    if names and reader_names and len(names) != readers and readers != 1:
        raise BenchError(f"--readers {readers} but {len(names)} --reader-names given")
    m = export(ExportRequest(runs=run_dirs(split_list(runs)), out=out, n=n, readers=len(names) if names else readers,
                             reader_names=names, seed=seed, stratify=stratify, reads_per_study=reads_per_study,
                             cache_dir=cache_dir))
    console.print(f"exported {m['studies']} studies x {len(m['runs'])} systems ({m['sentence_rows']} sentence rows "
                  f"for {len(m['settings']['readers'])} reader(s)) to {out}", highlight=False, soft_wrap=True)
    console.print(f"workbooks: {out}/workbooks/; returned workbooks go to {out}/returned/; "
                  f"the unblinding key is {out}/key/unblinding-key.json (never give it to readers)", highlight=False, soft_wrap=True)
    if m["empty_reports"]:
        console.print(f"{len(m['empty_reports'])} empty report(s) kept and shown as empty", highlight=False, soft_wrap=True)
    typer.echo(out)


def run_dirs(paths: list[str]) -> list[Path]:
    """Run directories; a directory that is not a run but holds runs stands for all of them."""
    from bench.stages.generate import IDENTITY

    out: list[Path] = []
    for p in map(Path, paths):
        if (p / IDENTITY).exists():
            out.append(p)
        elif p.is_dir() and (inner := sorted(d for d in p.iterdir() if (d / IDENTITY).exists())):
            out.extend(inner)
        else:
            raise BenchError(f"--runs {p}: neither a run directory nor a directory of runs (no {IDENTITY}); "
                             "make runs with `bench run --system S`")
    return out


@app.command("serve")
def serve_cmd(
    study: Path = typer.Argument(..., help="the study directory"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: this machine only)"),
    port: int = typer.Option(8765, "--port"),
) -> None:
    """Serve the reading page; each reader opens their own link."""
    need("starlette", "jinja2", "uvicorn")
    import uvicorn

    from readerstudy.layout import StudyDir
    from readerstudy.web.app import create_app

    sd = StudyDir(study).check()
    app_ = create_app(sd)
    readers = json.loads(sd.readers.read_text())["readers"]
    for name, r in readers.items():
        console.print(f"{name}: http://{host}:{port}{r['link']}", highlight=False, soft_wrap=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]listening on {host}: anyone who can reach it and has a link can read and answer[/yellow]")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command("simulate")
def simulate_cmd(
    study: Path = typer.Argument(..., help="the study directory"),
    seed: int = typer.Option(0, "--seed"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="cache root (default $SAERAD_BENCH_CACHE)"),
) -> None:
    """Dry run: simulated readers fill the workbooks into returned/ (marked simulated everywhere)."""
    need("openpyxl")
    from readerstudy.simulate import simulate

    for path in simulate(study, seed=seed, cache_dir=cache_dir):
        console.print(f"simulated answers: {path}", highlight=False, soft_wrap=True)


@app.command("import")
def import_cmd(
    study: Path = typer.Argument(..., help="the study directory"),
    partial: bool = typer.Option(False, "--partial", help="analyse what is complete; list what is left out"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="bootstrap resamples over studies (0: no intervals)"),
    permutations: int = typer.Option(10000, "--permutations", help="permutations of the paired tests"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print summary.json on stdout"),
) -> None:
    """Read returned workbooks and the page's answers, check them, unblind, and report."""
    need("openpyxl", "statsmodels", "krippendorff")
    from readerstudy.report import import_study, markdown

    summary = import_study(study, partial=partial, n_bootstrap=bootstrap, n_permutations=permutations, seed=seed)
    if as_json:
        typer.echo((Path(study) / "results" / "summary.json").read_text())
    else:
        typer.echo(markdown(summary))
    console.print(f"results in {Path(study) / 'results'} (summary.md, summary.json, verdicts.csv, "
                  "category-impact.png, actions.png)", highlight=False, soft_wrap=True)
