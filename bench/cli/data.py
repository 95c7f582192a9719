"""Data commands: `bench data phantom`, `bench data export`, `bench encode`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bench.cli.common import console
from bench.cli.stages import CACHE_DIR, DATA_ROOT, DATASET, REPORTS, SECTIONS


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(no_args_is_help=True, help="Datasets: phantom generation and export.")
    data_app.command("phantom", help="Generate a phantom dataset in the MIMIC-CXR-JPG layout with ground-truth labels.")(phantom)
    data_app.command("sample", help="Write a small synthetic dataset in the exact published layout of iu-xray or "
                     "chexpert-plus (to try the readers and the pipeline without the real data).")(sample)
    data_app.command("export", help="Dump what the harness reads for a split: one JSON object per evaluated sample.")(export)
    app.add_typer(data_app, name="data")
    app.command(help="Encode a split into the token cache (resumable; run shards in parallel).")(encode)


def phantom(
    out: Path = typer.Option(..., help="output directory (MIMIC-CXR-JPG layout)"),
    n_train: int = typer.Option(2000),
    n_test: int = typer.Option(400),
    seed: int = typer.Option(0),
    image_size: int = typer.Option(256),
) -> None:
    from bench.data.phantom import generate

    summary = generate(out, n_train=n_train, n_test=n_test, seed=seed, image_size=image_size, progress=True)
    console.print(f"[green]phantom dataset written to[/green] {out}: {summary}")


def sample(
    name: str = typer.Argument(..., help="iu-xray | chexpert-plus"),
    out: Path = typer.Option(..., help="output directory"),
    seed: int = typer.Option(0),
) -> None:
    from bench.data.layout_samples import WRITERS
    from bench.errors import BenchError

    if name not in WRITERS:
        raise BenchError(f"no layout sample for {name!r}; choose one of: {', '.join(WRITERS)}")
    summary = WRITERS[name](out, seed=seed)
    console.print(f"[green]{name} layout sample written to[/green] {out}: {summary}")


def export(
    out: Path = typer.Option(..., help="JSONL file to write"),
    data_root: Optional[Path] = DATA_ROOT,
    split: str = typer.Option("test"),
    unit: str = typer.Option("image"),
    reports: Optional[Path] = REPORTS,
    cache_dir: Optional[Path] = CACHE_DIR,
    dataset: Optional[str] = DATASET,
    sections: str = SECTIONS,
) -> None:
    from bench.data.export import export_jsonl
    from bench.stages.data import DataConfig, open_context

    _, ds = open_context(DataConfig(data_root=data_root, reports=reports, split=split, unit=unit, cache_dir=cache_dir,
                                    dataset=dataset, sections=sections))
    n = export_jsonl(ds, out)
    console.print(f"wrote {n} samples to {out} ({len(ds.skipped)} skipped)")


def encode(
    split: str = typer.Option("train"),
    data_root: Optional[Path] = DATA_ROOT,
    reports: Optional[Path] = REPORTS,
    encoder: Optional[str] = typer.Option(None),
    shard: str = typer.Option("0/1", help="i/n: encode the i-th of n shards (parallel workers share one cache)"),
    batch_size: int = typer.Option(32),
    device: Optional[str] = typer.Option(None),
    cache_dir: Optional[Path] = CACHE_DIR,
    dataset: Optional[str] = DATASET,
) -> None:
    from bench.encoders import encode_dataset, parse_shard
    from bench.stages.data import DataConfig, open_context

    i, n = parse_shard(shard)
    ctx, ds = open_context(DataConfig(data_root=data_root, reports=reports, split=split, cache_dir=cache_dir,
                                      encoder=encoder, device=device, dataset=dataset))
    report = encode_dataset(ds.samples, ctx.encoder(), ctx.cache_dir / "tokens", batch_size=batch_size,
                            shard=(i, n), progress=True)
    console.print(report.summary())
