"""The `bench` command line. Each command is a thin layer over a library function."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from bench.errors import BenchError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Benchmark chest X-ray report generators (SAE-Rad, baselines, external models).")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: phantom generation and export.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)


def _mount_sae() -> None:
    try:
        from saerad.sae.cli import app as sae_app
    except ImportError:  # the SAE library is optional at import time
        return
    app.add_typer(sae_app, name="sae", help="Sparse autoencoders: train, evaluate, benchmark.")
    from saerad.cli import features_app

    app.add_typer(features_app, name="features", help="SAE-Rad features: index, show, grid, label.")


_mount_sae()


def _mount_radfact() -> None:
    from radfact.cli import radfact_command

    app.command("radfact", help="RadFact: phrase splitting and bidirectional entailment with an LLM judge.")(radfact_command)


_mount_radfact()


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, show_time=False)])


def _split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _parse_metric_opts(opts: list[str] | None) -> dict[str, dict[str, str]]:
    """`--metric-opt rger.model_type=radgraph` -> {"rger": {"model_type": "radgraph"}}."""
    out: dict[str, dict[str, str]] = {}
    for key, value in _parse_opts(opts).items():
        if "." not in key:
            raise BenchError(f"--metric-opt expects metric.key=value, got {key}={value}")
        metric, name = key.split(".", 1)
        out.setdefault(metric, {})[name] = value
    return out


def _parse_opts(opts: list[str] | None) -> dict[str, str]:
    out = {}
    for o in opts or []:
        if "=" not in o:
            raise BenchError(f"--opt expects key=value, got {o!r}")
        k, v = o.split("=", 1)
        out[k.strip()] = v
    return out


@app.command()
def run(
    system: list[str] = typer.Option(..., "--system", "-s", help="system name(s); repeat or comma-separate"),
    split: str = typer.Option("test", help="train | validate | test"),
    data_root: Optional[Path] = typer.Option(None, help="MIMIC-CXR-JPG root; default: the embedded phantom dataset"),
    reports: Optional[Path] = typer.Option(None, help="report .txt tree or mimic-cxr-reports.zip (default: found under --data-root)"),
    unit: str = typer.Option("image", help="image (the paper's unit) or study"),
    metrics: Optional[list[str]] = typer.Option(None, "--metrics", "-m", help="metric names; default: all"),
    out: Optional[Path] = typer.Option(None, help="run directory (several systems: their parent)"),
    encoder: Optional[str] = typer.Option(None, help="encoder hub id or local dir; default rad-dino (phantom: the bundled encoder)"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1, ... (default: cuda if present)"),
    limit: Optional[int] = typer.Option(None, help="evaluate only the first N samples (smoke runs)"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples for intervals (0: none)"),
    seed: int = typer.Option(0, help="bootstrap seed"),
    opt: Optional[list[str]] = typer.Option(None, "--opt", help="system option key=value (repeatable)"),
    metric_opt: Optional[list[str]] = typer.Option(None, "--metric-opt", help="metric option metric.key=value (repeatable)"),
    cache_dir: Optional[Path] = typer.Option(None, help="cache for datasets and tokens (default $SAERAD_BENCH_CACHE or ~/.cache/saerad-bench)"),
) -> None:
    """Run systems on a split, score them, and print the leaderboard."""
    from bench.leaderboard import load_board, render
    from bench.runner import RunConfig
    from bench.runner import run as run_one
    from bench.scoring import DEFAULT_METRICS

    systems = _split_list(system)
    options = _parse_opts(opt)
    dirs = []
    for name in systems:
        cfg = RunConfig(system=name, system_options=options, split=split, data_root=data_root, reports=reports,
                        unit=unit, metrics=_split_list(metrics) or list(DEFAULT_METRICS),
                        out=(out / name if out and len(systems) > 1 else out), encoder=encoder, device=device,
                        limit=limit, n_bootstrap=bootstrap, seed=seed, cache_dir=cache_dir,
                        metric_options=_parse_metric_opts(metric_opt))
        d = run_one(cfg)
        console.print(f"[green]run written to[/green] {d}")
        dirs.append(d)
    group = dirs[0].parent if len(dirs) > 1 or out is None else dirs[0]
    print(render(load_board(group)))


@app.command()
def score(
    predictions: Path = typer.Option(..., help="JSONL with id, reference, prediction per line"),
    metrics: Optional[list[str]] = typer.Option(None, "--metrics", "-m"),
    bootstrap: int = typer.Option(1000),
    seed: int = typer.Option(0),
    per_sample: Optional[Path] = typer.Option(None, help="also write per-sample scores (parquet)"),
    metric_opt: Optional[list[str]] = typer.Option(None, "--metric-opt", help="metric option metric.key=value (repeatable)"),
) -> None:
    """Score any predictions file and print the aggregate scores as JSON."""
    from bench.predictions import read_predictions_file
    from bench.scoring import DEFAULT_METRICS
    from bench.scoring import score as score_fn

    ids, refs, preds = read_predictions_file(predictions)
    res = score_fn(ids, refs, preds, _split_list(metrics) or list(DEFAULT_METRICS), n_bootstrap=bootstrap, seed=seed,
                   metric_options=_parse_metric_opts(metric_opt))
    if per_sample:
        res.rows.to_parquet(per_sample, index=False)
    print(json.dumps({"n": len(ids), "empty_predictions": len(res.empty_predictions),
                      "metrics": {k: {kk: vv for kk, vv in v.items() if kk != "config"} for k, v in res.metrics.items()}},
                     indent=2))


@app.command()
def leaderboard(
    runs: Path = typer.Option(Path("runs"), help="directory searched for */aggregate.json"),
    format: str = typer.Option("md", "--format", "-f", help="md | csv | html"),
    intervals: bool = typer.Option(True, help="show 95% intervals"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to a file instead of stdout"),
) -> None:
    """Print the Table-1-shaped leaderboard of the runs under a directory."""
    from bench.leaderboard import load_board, render

    text = render(load_board(runs), format, intervals)
    if output:
        output.write_text(text)
        console.print(f"written to {output}")
    else:
        print(text, end="")


@app.command()
def compare(
    run_a: Path = typer.Argument(..., help="run directory A"),
    run_b: Path = typer.Argument(..., help="run directory B (same samples)"),
    permutations: int = typer.Option(10000, help="random swaps per test"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Paired approximate randomisation test per metric between two runs."""
    from dataclasses import asdict

    from bench.compare import compare_runs

    results, notes = compare_runs(run_a, run_b, permutations, seed)
    if as_json:
        print(json.dumps({"comparisons": [asdict(r) for r in results], "notes": notes}, indent=2))
        return
    t = Table("metric", "column", f"A: {run_a.name}", f"B: {run_b.name}", "B - A", "p-value",
              title=f"paired randomisation test, {permutations} permutations")
    for r in results:
        t.add_row(r.metric, r.column, f"{100 * r.a:.1f}", f"{100 * r.b:.1f}", f"{100 * (r.b - r.a):+.1f}",
                  f"{r.p_value:.4f}")
    Console().print(t)
    for n in notes:
        console.print(f"[yellow]{n}[/yellow]")


@app.command()
def systems() -> None:
    """List the registered systems (built-in and plug-ins)."""
    from bench.systems.registry import available_systems

    t = Table("system", "needs train", "description")
    for name, cls in sorted(available_systems().items()):
        t.add_row(name, "yes" if cls.needs_train else "", cls.description)
    Console().print(t)


@app.command("metrics")
def list_metrics() -> None:
    """List the registered metrics and whether each can run here."""
    from bench.errors import MetricUnavailable
    from bench.metrics.registry import get_metric, metric_names

    t = Table("metric", "columns", "status")
    for name in metric_names():
        m = get_metric(name)
        try:
            m.check()
            status = "[green]available[/green]"
        except MetricUnavailable as exc:
            status = f"[yellow]unavailable[/yellow]: {exc}"
        t.add_row(name, ", ".join(m.columns), status)
    Console().print(t)


@data_app.command("phantom")
def data_phantom(
    out: Path = typer.Option(..., help="output directory (MIMIC-CXR-JPG layout)"),
    n_train: int = typer.Option(2000),
    n_test: int = typer.Option(400),
    seed: int = typer.Option(0),
    image_size: int = typer.Option(256),
) -> None:
    """Generate a phantom dataset in the MIMIC-CXR-JPG layout with ground-truth labels."""
    from bench.data.phantom import generate

    summary = generate(out, n_train=n_train, n_test=n_test, seed=seed, image_size=image_size, progress=True)
    console.print(f"[green]phantom dataset written to[/green] {out}: {summary}")


@data_app.command("export")
def data_export(
    out: Path = typer.Option(..., help="JSONL file to write"),
    data_root: Optional[Path] = typer.Option(None, help="default: the embedded phantom dataset"),
    split: str = typer.Option("test"),
    unit: str = typer.Option("image"),
    reports: Optional[Path] = typer.Option(None),
) -> None:
    """Dump what the harness reads for a split: one JSON object per evaluated sample."""
    from bench.data.export import export_jsonl
    from bench.data.mimic import load_split
    from bench.runner import RunConfig, resolve_data_root

    root, _ = resolve_data_root(RunConfig(system="-", data_root=data_root))
    ds = load_split(root, split, unit=unit, reports=reports)
    n = export_jsonl(ds, out)
    console.print(f"wrote {n} samples to {out} ({len(ds.skipped)} skipped)")


@app.command()
def encode(
    split: str = typer.Option("train"),
    data_root: Optional[Path] = typer.Option(None),
    reports: Optional[Path] = typer.Option(None),
    encoder: Optional[str] = typer.Option(None),
    shard: str = typer.Option("0/1", help="i/n: encode the i-th of n shards (parallel workers share one cache)"),
    batch_size: int = typer.Option(32),
    device: Optional[str] = typer.Option(None),
    cache_dir: Optional[Path] = typer.Option(None),
) -> None:
    """Encode a split into the token cache (resumable; run shards in parallel)."""
    from bench.context import RunContext
    from bench.data.default import cache_root
    from bench.encoders import encode_dataset, parse_shard
    from bench.runner import RunConfig, resolve_data_root

    i, n = parse_shard(shard)
    root, name = resolve_data_root(RunConfig(system="-", data_root=data_root))
    ctx = RunContext(data_root=root, dataset_name=name, cache_dir=cache_dir or cache_root(), work_dir=Path("."),
                     reports=reports, encoder_id=encoder, device=device, batch_size=batch_size)
    ds = ctx.dataset(split)
    report = encode_dataset(ds.samples, ctx.encoder(), ctx.cache_dir / "tokens", batch_size=batch_size,
                            shard=(i, n), progress=True)
    console.print(report.summary())


def main() -> None:
    try:
        app(standalone_mode=False)
    except BenchError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
