"""`bench run`: dataset -> system -> predictions.jsonl -> scores -> aggregate + manifest.

Every stage writes a file the next one reads (DESIGN.md §6). predictions.jsonl is written
line by line and flushed, so a killed run resumes where it stopped: ids already present
are not generated again (they may have cost LLM calls or GPU time). A run directory
holds exactly one configuration; reusing it with another configuration is an error.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bench.context import RunContext
from bench.data.default import cache_root, embedded_default_root
from bench.errors import BenchError, UnknownNameError
from bench.metrics.registry import metric_names
from bench.manifest import git_revision, host_info, package_versions, write_json
from bench.scoring import DEFAULT_METRICS, score
from bench.systems.base import Prediction
from bench.systems.registry import get_system

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    system: str
    system_options: dict[str, str] = field(default_factory=dict)
    split: str = "test"
    data_root: Path | None = None  # None: the embedded phantom dataset
    reports: Path | None = None
    unit: str = "image"
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    out: Path | None = None
    encoder: str | None = None
    device: str | None = None
    limit: int | None = None
    n_bootstrap: int = 1000
    seed: int = 0
    cache_dir: Path | None = None
    metric_options: dict[str, dict[str, str]] = field(default_factory=dict)  # metric -> {option: value}

    def identity(self) -> dict[str, Any]:
        """The fields that determine the predictions; a run directory is tied to these."""
        return {"system": self.system, "system_options": self.system_options, "split": self.split,
                "data_root": str(self.data_root) if self.data_root else None, "unit": self.unit,
                "encoder": self.encoder, "limit": self.limit}


def default_out(cfg: RunConfig, dataset_name: str) -> Path:
    label = cfg.system_options.get("label") or cfg.system
    return Path("runs") / f"{dataset_name}-{cfg.split}" / label


def resolve_data_root(cfg: RunConfig) -> tuple[Path, str]:
    if cfg.data_root is None:
        root = embedded_default_root(cfg.cache_dir)
        log.info("no --data-root given: using the embedded phantom dataset at %s", root)
        return root, "phantom"
    root = Path(cfg.data_root).expanduser().resolve()
    return root, "phantom" if (root / "phantom.json").exists() else "mimic-cxr"


def run(cfg: RunConfig) -> Path:
    t_start = time.perf_counter()
    # Fail on typos before any expensive work.
    unknown = [m for m in cfg.metrics if m not in metric_names()]
    if unknown:
        raise UnknownNameError("metric", unknown[0], metric_names())
    system = get_system(cfg.system, **cfg.system_options)
    root, dataset_name = resolve_data_root(cfg)
    out = Path(cfg.out) if cfg.out else default_out(cfg, dataset_name)
    out.mkdir(parents=True, exist_ok=True)
    _claim_run_dir(out, cfg)
    ctx = RunContext(data_root=root, dataset_name=dataset_name, cache_dir=cfg.cache_dir or cache_root(),
                     work_dir=out, unit=cfg.unit, reports=cfg.reports, encoder_id=cfg.encoder,
                     device=cfg.device, limit=cfg.limit)
    ds = ctx.dataset(cfg.split)
    if not ds.samples:
        raise BenchError(f"the {cfg.split} split of {root} has no usable samples "
                         f"({len(ds.skipped)} skipped; see the log)")

    pred_path = out / "predictions.jsonl"
    done = _read_predictions(pred_path)
    todo = [s for s in ds.samples if s.id not in done]
    if done:
        log.info("resuming: %d predictions already in %s, %d to generate", len(done), pred_path, len(todo))
    if todo:
        if system.needs_train:
            t0 = time.perf_counter()
            system.fit(ctx)
            ctx.timings["fit_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with open(pred_path, "a") as fh:
            for p in _progress(system.generate(todo, ctx), len(todo), f"{cfg.system}: generating"):
                fh.write(json.dumps(p.to_json()) + "\n")
                fh.flush()
                done[p.id] = p
        ctx.timings["generate_s"] = time.perf_counter() - t0
    missing = [s.id for s in ds.samples if s.id not in done]
    if missing:
        raise BenchError(f"system {cfg.system} produced no prediction for {len(missing)} samples "
                         f"(first: {missing[:3]})")
    preds = [done[s.id] for s in ds.samples]

    t0 = time.perf_counter()
    result = score([p.id for p in preds], [p.reference for p in preds], [p.prediction for p in preds],
                   cfg.metrics, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed, metric_options=cfg.metric_options)
    ctx.timings["score_s"] = time.perf_counter() - t0
    result.rows.to_parquet(out / "scores.parquet", index=False)
    label = cfg.system_options.get("label") or cfg.system
    write_json(out / "aggregate.json", {
        "system": label, "dataset": dataset_name, "split": cfg.split, "unit": cfg.unit,
        "n": len(preds), "metrics": result.metrics})
    ctx.timings.update(result.timings)
    ctx.timings["total_s"] = time.perf_counter() - t_start
    write_json(out / "manifest.json", {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "resolved": {"data_root": str(root), "dataset": dataset_name, "out": str(out)},
        "system": system.config(),
        "metrics": {k: v.get("config") for k, v in result.metrics.items()},
        "datasets": ctx.used.get("datasets", {}),
        "encoder": ctx.used.get("encoder"),
        "encoding": ctx.used.get("encoding"),
        "llm": ctx.used.get("llm"),  # calls, cache hits and tokens per LLM client
        # Anything else systems recorded about themselves (SAE fingerprints, label counts, ...).
        "system_state": {k: v for k, v in ctx.used.items() if k not in ("datasets", "encoder", "encoding", "llm")},
        # Every split the run read (the evaluated one, and train for systems that fit).
        "skipped": {split: [asdict(s) for s in d.skipped] for split, d in ctx.loaded().items()},
        "empty_predictions": result.empty_predictions,
        "timings": ctx.timings,
        "versions": package_versions(),
        "git": git_revision(),
        "host": host_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return out


def _claim_run_dir(out: Path, cfg: RunConfig) -> None:
    marker = out / "run-identity.json"
    ident = cfg.identity()
    if marker.exists():
        old = json.loads(marker.read_text())
        if old != ident:
            raise BenchError(f"{out} holds a run with another configuration ({old}); "
                             "choose another --out or delete it")
    else:
        write_json(marker, ident)


def _read_predictions(path: Path) -> dict[str, Prediction]:
    done: dict[str, Prediction] = {}
    if not path.exists():
        return done
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines):
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) - 1:  # a line cut by a kill: drop it, it is regenerated
                log.warning("dropping a truncated last line of %s", path)
                _truncate_to_lines(path, lines[:n])
                break
            raise BenchError(f"{path}: line {n + 1} is not JSON; delete the file to start over")
        done[d["id"]] = Prediction(d["id"], d["prediction"], d["reference"], d.get("provenance", {}))
    return done


def _truncate_to_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _progress(it, total: int, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for x in it:
            yield x
            bar.advance(task)
