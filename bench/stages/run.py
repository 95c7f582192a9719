"""`bench run`: generate, then score, then the leaderboard, for one or more systems.

Everything a run could get wrong cheaply is checked before anything expensive starts:
every metric is built, its options validated and its check() run; every system is built
with its options validated; the data is read. Then each system generates into its own run
directory under one parent, and each run is scored by the same code `bench score` uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError, UnknownNameError
from bench.stages.data import DataConfig, open_context
from bench.stages.generate import GenerateConfig, default_parent, generate
from bench.stages.score import DEFAULT_METRICS, prepare_metrics, score_run
from bench.systems.base import System
from bench.systems.registry import get_system, system_names

log = logging.getLogger(__name__)


@dataclass
class RunRequest:
    systems: list[str]
    system_options: dict[str, dict[str, str]] = field(default_factory=dict)  # system -> {key: value}
    labels: dict[str, str] = field(default_factory=dict)  # system -> run label
    data: DataConfig = field(default_factory=DataConfig)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    metric_options: dict[str, dict[str, str]] = field(default_factory=dict)
    out: Path | None = None  # parent directory of the run directories
    n_bootstrap: int = 1000
    seed: int = 0
    allow_fallback: bool = False


def build_systems(req: RunRequest) -> list[System]:
    """The request's systems, built with their options validated, after the cheap checks
    (names, options and labels addressed to systems in the run, the device): no data is read."""
    if not req.systems:
        raise BenchError("name at least one system (--system)")
    if len(set(req.systems)) != len(req.systems):
        raise BenchError("a system is listed twice; run it once per --label instead")
    known = system_names()
    stray = sorted(set(req.system_options) - set(req.systems))
    if stray:
        raise BenchError(f"--opt for system(s) not in this run: {', '.join(stray)} "
                         f"(systems in this run: {', '.join(req.systems)})")
    stray = sorted(set(req.labels) - set(req.systems))
    if stray:
        raise BenchError(f"--label for system(s) not in this run: {', '.join(stray)}")
    systems = []
    for name in req.systems:
        if name not in known:
            raise UnknownNameError("system", name, known)
        systems.append(get_system(name, req.system_options.get(name)))
    if req.data.device is not None:
        from bench.devices import check_device

        check_device(req.data.device)
    return systems


def generate_config(req: RunRequest, name: str, parent: Path | None) -> GenerateConfig:
    return GenerateConfig(system=name, options=req.system_options.get(name, {}), label=req.labels.get(name),
                          data=req.data, out=parent, allow_fallback=req.allow_fallback)


def run(req: RunRequest) -> tuple[Path, list[Path]]:
    """(parent directory, run directories). Raises BenchError if any system failed; the others'
    runs are written first."""
    systems = build_systems(req)
    prepared = prepare_metrics(req.metrics, req.metric_options, req.data.cache())
    base_ctx, ds = open_context(req.data)
    parent = Path(req.out) if req.out else default_parent(ds)
    dirs, failures = [], []
    for name, system in zip(req.systems, systems):
        cfg = generate_config(req, name, parent)
        try:
            run_dir = generate(cfg, system, base_ctx.fork(), ds)
            score_run(run_dir, prepared, req.n_bootstrap, req.seed, req.data.cache_dir)
        except BenchError as exc:
            if len(req.systems) == 1:
                raise
            log.error("%s: %s", cfg.run_label, exc)
            failures.append(f"{cfg.run_label}: {exc}")
            continue
        log.info("run written to %s", run_dir)
        dirs.append(run_dir)
    if failures:
        raise BenchError(f"{len(failures)} of {len(req.systems)} systems failed (the other runs are in {parent}): "
                         + " | ".join(failures))
    return parent, dirs
