"""Which data a stage reads: the dataset, split and unit, resolved once into a RunContext.

A run directory is tied to what `DataConfig.identity` returns: the dataset's name, its
fingerprint (a hash of the sample ids, references and image file sizes that were read),
the resolved data root and reports source, the split, the unit and the sample limit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.context import RunContext
from bench.data.default import cache_root, embedded_default_root
from bench.data.records import Dataset
from bench.errors import BenchError, DataError

log = logging.getLogger(__name__)

EMBEDDED = "embedded phantom (default)"


@dataclass
class DataConfig:
    data_root: Path | None = None  # None: the embedded phantom dataset
    reports: Path | None = None  # None: found under the data root
    split: str = "test"
    unit: str = "image"
    limit: int | None = None
    cache_dir: Path | None = None  # the one cache root; None: $SAERAD_BENCH_CACHE or ~/.cache/saerad-bench
    encoder: str | None = None
    device: str | None = None
    dataset: str | None = None  # a reader of bench.data.readers; None: told by the data root's files
    sections: str = "findings"  # which report sections make the reference (bench.data.sections)

    def cache(self) -> Path:
        return Path(self.cache_dir).expanduser().resolve() if self.cache_dir else cache_root()


def resolve_root(data: DataConfig) -> tuple[Path, str]:
    """(absolute data root, dataset name); generates the embedded default on first use."""
    from bench.data.readers import check_dataset, detect
    from bench.data.sections import check_section_choice

    check_section_choice(data.sections)
    if data.dataset is not None:
        check_dataset(data.dataset)
    if data.data_root is None:
        if data.dataset not in (None, "phantom"):
            raise DataError(f"--dataset {data.dataset} needs --data-root DIR (the directory that holds it); "
                            "without --data-root the embedded phantom dataset is used")
        root = embedded_default_root(data.cache())
        log.info("no --data-root given: using the embedded phantom dataset at %s", root)
        return root, "phantom"
    root = Path(data.data_root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"--data-root {data.data_root} is not a directory")
    return root, data.dataset or detect(root)


def open_context(data: DataConfig, work_dir: Path | None = None) -> tuple[RunContext, Dataset]:
    """A context with `data.split` as the split under test, and that split loaded."""
    if data.limit is not None and data.limit < 1:
        raise BenchError(f"--limit must be at least 1, got {data.limit}")
    root, name = resolve_root(data)
    reports = Path(data.reports).expanduser().resolve() if data.reports else None
    ctx = RunContext(data_root=root, dataset_name=name, cache_dir=data.cache(), work_dir=work_dir or Path("."),
                     unit=data.unit, reports=reports, encoder_id=data.encoder, device=data.device,
                     limit=data.limit, eval_split=data.split, sections=data.sections)
    ds = ctx.evaluation_dataset()
    if not ds.samples:
        raise DataError(f"the {data.split} split of {root} has no usable samples "
                        f"({len(ds.skipped)} skipped; see the log)")
    return ctx, ds


def open_run_dataset(ident: dict[str, Any], run_dir: Path, cache_dir: Path | None = None) -> Dataset:
    """The dataset a run directory was generated on (from its run identity), refused if its
    data changed since: what the run's ids mean must be what they meant then."""
    data = DataConfig(data_root=Path(ident["data_root"]),
                      reports=None if ident["reports"] == "found under the data root" else Path(ident["reports"]),
                      split=ident["split"], unit=ident["unit"], limit=ident["limit"], cache_dir=cache_dir,
                      dataset=ident.get("reader"), sections=ident.get("sections", "findings"))
    _, ds = open_context(data)
    if ds.fingerprint != ident["fingerprint"]:
        raise DataError(f"the data under {ident['data_root']} changed since {run_dir} was generated (dataset "
                        f"fingerprint {ds.fingerprint}, the run's {ident['fingerprint']}); generate the run again")
    return ds


def identity(ctx: RunContext, ds: Dataset) -> dict[str, Any]:
    """What the predictions depend on, on the data side."""
    return {"dataset": ds.name, "fingerprint": ds.fingerprint, "data_root": str(ctx.data_root),
            "reports": str(ctx.reports) if ctx.reports else "found under the data root",
            "split": ds.split, "unit": ds.unit, "limit": ctx.limit, "encoder": ctx.encoder_name,
            "reader": ctx.dataset_name, "sections": ctx.sections}


def dataset_summary(ds: Dataset) -> dict[str, Any]:
    """How aggregate.json names the data a run was scored on (the leaderboard groups by it)."""
    return {"name": ds.name, "fingerprint": ds.fingerprint, "split": ds.split, "unit": ds.unit,
            "sections": ds.sections}
