"""The stage commands: run, generate, score, leaderboard, compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from bench.cli.common import addressed, console, labels, split_list
from bench.errors import BenchError

# Options shared by the commands that read a dataset.
DATA_ROOT = typer.Option(None, "--data-root", help="MIMIC-CXR-JPG root (or a phantom dataset); default: the embedded phantom dataset")
REPORTS = typer.Option(None, help="report .txt tree or mimic-cxr-reports.zip (default: found under --data-root)")
SPLIT = typer.Option("test", help="train | validate | test (IU-Xray: train | val | test | all; CheXpert Plus: train | valid)")
DATASET = typer.Option(None, "--dataset", help="mimic-cxr | iu-xray | chexpert-plus | phantom (default: told by the "
                       "files under --data-root; the embedded phantom without one)")
SECTIONS = typer.Option("findings", "--sections", help="the reference: findings (impression as fallback; the paper's), "
                        "findings+impression, or findings-only")
UNIT = typer.Option("image", help="image (the paper's unit) or study")
LIMIT = typer.Option(None, help="use only the first N samples of the split (smoke runs)")
CACHE_DIR = typer.Option(None, help="the cache root for datasets, tokens, labels and LLM answers "
                                    "(default $SAERAD_BENCH_CACHE or ~/.cache/saerad-bench)")
METRICS = typer.Option(None, "--metrics", "-m", help="metric names, comma-separated or repeated; default: all of Table 1")
METRIC_OPT = typer.Option(None, "--metric-opt", help="metric option METRIC.key=value (repeatable)")
BOOTSTRAP = typer.Option(1000, help="bootstrap resamples of studies for intervals (0: none)")
SEED = typer.Option(0, help="bootstrap seed")
ENDPOINTS = typer.Option(None, "--endpoints", help="endpoint file (docs/llm-servers.md): each LLM use its [uses] table "
                         "names (saerad, radfact, green, ...) gets @FILE; an --opt/--metric-opt given for it wins")


def register(app: typer.Typer) -> None:
    app.command(help="Generate, score and tabulate: `generate` + `score` + `leaderboard` for each system.")(run)
    app.command(help="Run systems on a split and write predictions.jsonl (resumable) into a run directory each.")(generate)
    app.command(help="Score a run directory, or any predictions file, against references from the dataset.")(score)
    app.command(help="Tables of every scored run under a directory, one per dataset/split/unit.")(leaderboard)
    app.command(help="Paired randomisation test per metric between two scored runs (studies swapped together).")(compare)


def _data(data_root, reports, split, unit, limit, cache_dir, encoder=None, device=None, dataset=None,
          sections="findings"):
    from bench.stages.data import DataConfig

    return DataConfig(data_root=data_root, reports=reports, split=split, unit=unit, limit=limit, cache_dir=cache_dir,
                      encoder=encoder, device=device, dataset=dataset, sections=sections)


def _with_endpoints(path: Path | None, systems: list[str], system_options: dict, metrics: list[str],
                    metric_options: dict) -> tuple[dict, dict]:
    """The options with `--endpoints FILE` applied (bench.llm.endpoints); unchanged without one."""
    if path is None:
        return system_options, metric_options
    from bench.llm.endpoints import apply_endpoint_file

    return apply_endpoint_file(path, systems, system_options, metrics, metric_options)


def run(
    system: list[str] = typer.Option(..., "--system", "-s", help="system name(s); repeat or comma-separate"),
    opt: Optional[list[str]] = typer.Option(None, "--opt", help="system option SYSTEM.key=value (repeatable; "
                                            "the SYSTEM. prefix may be left out when there is one system)"),
    label: Optional[list[str]] = typer.Option(None, "--label", help="run name: NAME (one system) or SYSTEM=NAME"),
    out: Optional[Path] = typer.Option(None, help="parent directory: one run directory per system "
                                       "(default runs/<dataset>-<fingerprint>-<split>)"),
    data_root: Optional[Path] = DATA_ROOT, reports: Optional[Path] = REPORTS, split: str = SPLIT, unit: str = UNIT,
    limit: Optional[int] = LIMIT, dataset: Optional[str] = DATASET, sections: str = SECTIONS,
    encoder: Optional[str] = typer.Option(None, help="encoder hub id or local dir; default rad-dino (phantom: the bundled encoder)"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ... (default: cuda if present)"),
    metrics: Optional[list[str]] = METRICS, metric_opt: Optional[list[str]] = METRIC_OPT,
    bootstrap: int = BOOTSTRAP, seed: int = SEED, cache_dir: Optional[Path] = CACHE_DIR,
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="keep runs in which over 5% of the "
                                        "predictions fell back from the system's own method (tables mark them)"),
    endpoints: Optional[Path] = ENDPOINTS,
) -> None:
    from bench.stages.leaderboard import load_boards, render
    from bench.stages.run import RunRequest
    from bench.stages.run import run as run_stages
    from bench.stages.score import DEFAULT_METRICS

    systems = split_list(system)
    metric_list = split_list(metrics) or list(DEFAULT_METRICS)
    system_options, metric_options = _with_endpoints(endpoints, systems, addressed(opt, "--opt", systems, "system"),
                                                     metric_list, addressed(metric_opt, "--metric-opt", metric_list,
                                                                            "metric"))
    req = RunRequest(systems=systems, system_options=system_options, labels=labels(label, systems),
                     data=_data(data_root, reports, split, unit, limit, cache_dir, encoder, device, dataset, sections),
                     metrics=metric_list, metric_options=metric_options,
                     out=out, n_bootstrap=bootstrap, seed=seed, allow_fallback=allow_fallback)
    parent, dirs = run_stages(req)
    for d in dirs:
        console.print(f"[green]run written to[/green] {d}")
    print(render(load_boards(parent)), end="")


def generate(
    system: list[str] = typer.Option(..., "--system", "-s", help="system name(s); repeat or comma-separate"),
    opt: Optional[list[str]] = typer.Option(None, "--opt", help="system option SYSTEM.key=value (repeatable)"),
    label: Optional[list[str]] = typer.Option(None, "--label", help="run name: NAME (one system) or SYSTEM=NAME"),
    out: Optional[Path] = typer.Option(None, help="parent directory: one run directory per system"),
    data_root: Optional[Path] = DATA_ROOT, reports: Optional[Path] = REPORTS, split: str = SPLIT, unit: str = UNIT,
    limit: Optional[int] = LIMIT, dataset: Optional[str] = DATASET, sections: str = SECTIONS,
    encoder: Optional[str] = typer.Option(None, help="encoder hub id or local dir"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ..."),
    cache_dir: Optional[Path] = CACHE_DIR,
    allow_fallback: bool = typer.Option(False, "--allow-fallback", help="keep runs in which over 5% of the "
                                        "predictions fell back from the system's own method (tables mark them)"),
    endpoints: Optional[Path] = ENDPOINTS,
) -> None:
    from bench.stages.data import open_context
    from bench.stages.generate import generate as generate_one
    from bench.stages.run import RunRequest, build_systems, generate_config

    systems = split_list(system)
    system_options, _ = _with_endpoints(endpoints, systems, addressed(opt, "--opt", systems, "system"), [], {})
    req = RunRequest(systems=systems, system_options=system_options,
                     labels=labels(label, systems),
                     data=_data(data_root, reports, split, unit, limit, cache_dir, encoder, device, dataset, sections),
                     metrics=[], out=out, allow_fallback=allow_fallback)
    built = build_systems(req)  # every option checked before the data is read
    ctx, ds = open_context(req.data)
    for name, sys_ in zip(systems, built):
        d = generate_one(generate_config(req, name, out), sys_, ctx.fork(), ds)
        console.print(f"[green]predictions written to[/green] {d / 'predictions.jsonl'}")


def score(
    run_dir: Optional[list[Path]] = typer.Option(None, "--run", help="run directory made by `bench generate` (repeatable)"),
    predictions: Optional[Path] = typer.Option(None, help="any JSONL file with id and prediction per line "
                                               "(and reference, unless the references come from the dataset)"),
    out: Optional[Path] = typer.Option(None, help="with --predictions: write scores.parquet and aggregate.json here"),
    label: Optional[str] = typer.Option(None, help="with --predictions: the run's name in tables (default: the file name)"),
    data_root: Optional[Path] = DATA_ROOT, reports: Optional[Path] = REPORTS, split: str = SPLIT, unit: str = UNIT,
    limit: Optional[int] = LIMIT, dataset: Optional[str] = DATASET, sections: str = SECTIONS,
    metrics: Optional[list[str]] = METRICS, metric_opt: Optional[list[str]] = METRIC_OPT,
    bootstrap: int = BOOTSTRAP, seed: int = SEED, cache_dir: Optional[Path] = CACHE_DIR,
    endpoints: Optional[Path] = ENDPOINTS,
) -> None:
    """With --predictions, references come from the file when every line has one and no
    --data-root is given; otherwise from the dataset (default: the embedded phantom)."""
    from bench.data.default import cache_root
    from bench.predictions import read_predictions
    from bench.stages.score import DEFAULT_METRICS, prepare_metrics, score_input, score_run, write_scores
    from bench.stages.score import score as score_fn

    if bool(run_dir) == bool(predictions):
        raise BenchError("give either --run DIR (a run directory) or --predictions FILE")
    metric_list = split_list(metrics) or list(DEFAULT_METRICS)
    root = cache_dir.expanduser().resolve() if cache_dir else cache_root()
    _, metric_options = _with_endpoints(endpoints, [], {}, metric_list,
                                        addressed(metric_opt, "--metric-opt", metric_list, "metric"))
    prepared = prepare_metrics(metric_list, metric_options, root)
    if run_dir:
        for d in run_dir:
            agg = score_run(d, prepared, bootstrap, seed, cache_dir)
            console.print(f"[green]scores written to[/green] {d}")
            _print_aggregate(agg)
        return
    assert predictions is not None
    records = read_predictions(predictions)
    explicit = data_root is not None or reports is not None or limit is not None or dataset is not None
    inp = score_input(records, predictions,
                      _data(data_root, reports, split, unit, limit, cache_dir, dataset=dataset, sections=sections)
                      if explicit or
                      not all(r.reference is not None for r in records) else None)
    result = score_fn(inp.ids, inp.references, inp.predictions, prepared, bootstrap, seed, inp.study_ids,
                      data=inp.dataset if "root" in inp.dataset else None)
    if out:
        agg = write_scores(out, label or predictions.stem, "predictions file", inp, result,
                           {"predictions": str(predictions.resolve())})
        console.print(f"[green]scores written to[/green] {out}")
    else:
        from bench.stages.score import aggregate_record

        agg = aggregate_record(label or predictions.stem, "predictions file", inp, result)
    _print_aggregate(agg)


def _print_aggregate(agg: dict) -> None:
    slim = {**agg, "metrics": {k: {kk: vv for kk, vv in v.items() if kk != "config"} for k, v in agg["metrics"].items()}}
    print(json.dumps(slim, indent=2))


def leaderboard(
    runs: Path = typer.Option(Path("runs"), help="directory searched for */aggregate.json"),
    format: str = typer.Option("md", "--format", "-f", help="md | csv | html"),
    intervals: bool = typer.Option(True, help="show 95% intervals"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to a file instead of stdout"),
    allow_mixed: bool = typer.Option(False, "--allow-mixed", help="show values computed differently (other "
                                     "signatures) side by side, marked; default: refuse, naming the setting"),
    published: bool = typer.Option(False, "--published", help="also show published results (the SAE-Rad paper's "
                                   "Table 1), marked † and quoted, beside runs on the same data"),
) -> None:
    from bench.stages.leaderboard import load_boards, render

    text = render(load_boards(runs, allow_mixed, published), format, intervals)
    if output:
        output.write_text(text)
        console.print(f"written to {output}")
    else:
        print(text, end="")


def compare(
    run_a: Path = typer.Argument(..., help="run directory A"),
    run_b: Path = typer.Argument(..., help="run directory B (same samples)"),
    permutations: int = typer.Option(10000, help="random swaps per test"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    allow_mixed: bool = typer.Option(False, "--allow-mixed", help="compare metrics computed differently (marked)"),
) -> None:
    from dataclasses import asdict

    from bench.stages.compare import compare_runs

    results, notes = compare_runs(run_a, run_b, permutations, seed, allow_mixed)
    if as_json:
        print(json.dumps({"comparisons": [asdict(r) for r in results], "notes": notes}, indent=2))
        return
    t = Table("metric", "column", f"A: {run_a.name}", f"B: {run_b.name}", "B - A", "p-value", "n",
              title=f"paired randomisation test, {permutations} permutations, studies swapped together")
    for r in results:
        t.add_row(("≠ " if r.mixed else "") + r.metric, r.column, f"{100 * r.a:.1f}", f"{100 * r.b:.1f}",
                  f"{100 * (r.b - r.a):+.1f}", f"{r.p_value:.4f}", str(r.n))
    Console().print(t)
    for n in notes:
        console.print(f"[yellow]{n}[/yellow]")
