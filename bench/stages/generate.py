"""`bench generate`: dataset -> system -> <run>/predictions.jsonl + manifest.json.

The system gets the test samples as queries (no findings) and yields (id, findings,
provenance); each prediction is appended to predictions.jsonl as soon as it exists, so a
killed or crashed run keeps what it made and a re-run generates only the rest (those may
have cost LLM calls or GPU time). A run directory holds one configuration: its identity
(system, options, dataset fingerprint and source, split, unit, limit, encoder) is written
when generation starts, and a directory made with another configuration refuses to resume,
naming what differs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from bench.context import RunContext
from bench.data.records import Dataset
from bench.errors import BenchError
from bench.manifest import git_revision, host_info, package_versions, write_json
from bench.predictions import PredictionsWriter, read_predictions
from bench.stages.data import DataConfig, identity, open_context
from bench.systems.base import System

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
MANIFEST = "manifest.json"
IDENTITY = "run-identity.json"
LOCK = ".lock"
# A run whose predictions fell back from the system's own way of making them (e.g. SAE-Rad's
# LLM composer failing and its LLM-free text used instead) for more than this share of
# samples fails unless fallbacks are allowed: it is not the system it says it is.
MAX_FALLBACK = 0.05


@dataclass
class GenerateConfig:
    system: str
    options: dict[str, str] = field(default_factory=dict)
    label: str | None = None  # the run's name in tables and its directory name; default: the system name
    data: DataConfig = field(default_factory=DataConfig)
    out: Path | None = None  # parent directory; the run directory is out/<label>
    allow_fallback: bool = False  # keep a run even when most predictions fell back

    @property
    def run_label(self) -> str:
        return self.label or self.system


def default_parent(ds: Dataset) -> Path:
    """runs/<dataset>-<fingerprint>-<split>[-study]: other data never lands in the same place."""
    unit = "" if ds.unit == "image" else f"-{ds.unit}"
    return Path("runs") / f"{ds.name}-{ds.fingerprint[:8]}-{ds.split}{unit}"


def run_dir_for(cfg: GenerateConfig, ds: Dataset) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", cfg.run_label):
        raise BenchError(f"--label {cfg.run_label!r}: use letters, digits and . _ + = - (it names a directory)")
    return Path(cfg.out or default_parent(ds)) / cfg.run_label


def generate(cfg: GenerateConfig, system: System, ctx: RunContext | None = None,
             ds: Dataset | None = None) -> Path:
    """Generate (or finish generating) predictions into the run directory; returns it.

    `system` is built (options validated) by the caller, so that every option and metric
    error is reported before this, the expensive part, starts."""
    t_start = time.perf_counter()
    if ctx is None or ds is None:
        ctx, ds = open_context(cfg.data)
    run_dir = run_dir_for(cfg, ds)
    ctx.work_dir = run_dir
    ctx.allow_test_findings = system.reads_test_findings
    ident = {"system": cfg.system, "options": system.options.model_dump(mode="json"), "label": cfg.run_label,
             **identity(ctx, ds)}
    with run_lock(run_dir):
        claim(run_dir, ident)
        return _generate_locked(cfg, system, ctx, ds, run_dir, ident, t_start)


def _generate_locked(cfg: GenerateConfig, system: System, ctx: RunContext, ds: Dataset, run_dir: Path,
                     ident: dict[str, Any], t_start: float) -> Path:

    pred_path = run_dir / PREDICTIONS
    done = {r.id for r in read_predictions(pred_path, torn_tail="drop")} if pred_path.exists() else set()
    unknown = done - {s.id for s in ds.samples}
    if unknown:
        raise BenchError(f"{pred_path} holds {len(unknown)} ids that are not in the {ds.split} split "
                         f"(first: {sorted(unknown)[:3]}); it was made from other data: choose another --out")
    todo = [s.query() for s in ds.samples if s.id not in done]
    if done:
        log.info("resuming: %d predictions already in %s, %d to generate", len(done), pred_path, len(todo))
    manifest: dict[str, Any] = {"status": "generating", "identity": ident}
    n_new, error = 0, None
    if todo:
        try:
            if system.needs_train:
                t0 = time.perf_counter()
                system.fit(ctx)
                ctx.timings["fit_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            wanted = {q.id for q in todo}
            with PredictionsWriter(pred_path) as out:
                for p in _progress(system.generate(todo, ctx), len(todo), f"{cfg.run_label}: generating",
                                   ctx.progress):
                    if p.id not in wanted:
                        raise BenchError(f"system {cfg.system} returned a prediction for {p.id!r}, which it "
                                         "was not asked for (or twice)")
                    if not isinstance(p.findings, str):
                        raise BenchError(f"system {cfg.system} returned {type(p.findings).__name__} findings "
                                         f"for {p.id!r}; findings must be text")
                    wanted.discard(p.id)
                    out.write(p.to_json())
                    n_new += 1
            ctx.timings["generate_s"] = time.perf_counter() - t0
        except (Exception, KeyboardInterrupt) as exc:  # keep what was made; say how to continue
            error = exc
        finally:
            try:
                system.close()
            except Exception as exc:  # a failed clean-up must not hide the run's own outcome
                log.warning("system %s: closing failed: %s", cfg.system, exc)
    have = len(done) + n_new
    missing = len(ds.samples) - have
    manifest.update({
        "status": "complete" if error is None and missing == 0 else "incomplete",
        "n_samples": len(ds.samples), "n_predictions": have, "n_generated_now": n_new,
        "system": _safe_config(system),
        "datasets": ctx.used.get("datasets", {}),
        "encoder": ctx.used.get("encoder"),
        "encoding": ctx.used.get("encoding"),
        "llm": ctx.used.get("llm"),
        # Anything else systems recorded about themselves (SAE fingerprints, label counts, ...).
        "system_state": {k: v for k, v in ctx.used.items() if k not in ("datasets", "encoder", "encoding", "llm")},
        "skipped": {split: [{"path": s.path, "reason": s.reason} for s in d.skipped]
                    for split, d in ctx.loaded().items()},
        # Rows the reader did not use, by reason, and inputs it used after repairing them.
        "dropped": {split: dict(d.dropped) for split, d in ctx.loaded().items()},
        "repaired": {split: [{"path": s.path, "reason": s.reason} for s in d.repaired]
                     for split, d in ctx.loaded().items()},
        "timings": {**ctx.timings, "generate_total_s": time.perf_counter() - t_start},
        "versions": package_versions(), "git": git_revision(), "host": host_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    if error is not None:
        manifest["error"] = f"{type(error).__name__}: {error}"
    _carry_over(run_dir, manifest)
    update_manifest(run_dir, "generate", manifest)
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            raise error
        raise BenchError(f"system {cfg.system} failed after {n_new} of {len(todo)} predictions: "
                         f"{type(error).__name__}: {error}. The {have} predictions made so far are kept in "
                         f"{pred_path}; run the same command again to generate the rest") from error
    if missing:
        raise BenchError(f"system {cfg.system} produced no prediction for {missing} of {len(ds.samples)} samples; "
                         f"the run in {run_dir} is incomplete (run the same command again to retry them)")
    fell_back = fallback_count(read_predictions(pred_path))
    manifest["fallbacks"] = fell_back
    update_manifest(run_dir, "generate", manifest)
    if fell_back and fell_back / have > MAX_FALLBACK and not cfg.allow_fallback:
        raise BenchError(f"{fell_back} of {have} predictions of {cfg.run_label} were not made the system's own way "
                         f"(provenance 'fallback'; e.g. an LLM that failed): over {MAX_FALLBACK:.0%}, so this run does "
                         "not measure the system. Fix the cause (see the log and the provenance), or keep the run "
                         "with --allow-fallback (tables then mark it)")
    return run_dir


def _carry_over(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Keep what earlier attempts of this run recorded: a resumed run that generates little or
    nothing must not erase the record (LLM usage, fitted-system state) of the one before."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return
    previous = json.loads(path.read_text()).get("generate")
    if not previous:
        return
    for key in ("system", "encoder", "encoding", "llm", "system_state"):
        # With nothing generated now the system was not even fitted: its description is the earlier one.
        if (not manifest.get(key) or not manifest.get("n_generated_now")) and previous.get(key):
            manifest[key] = previous[key]
    earlier = previous.pop("attempts", [])
    manifest["attempts"] = earlier + [{k: previous.get(k) for k in ("created", "status", "n_generated_now",
                                                                    "error", "llm", "timings")}]


def fallback_count(records) -> int:
    """Predictions whose provenance says they fell back from the system's own method."""
    return sum(bool(r.provenance.get("fallback")) for r in records)


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Exclusive use of a run directory while a stage writes it; a second writer is refused.

    An advisory lock (flock) on <run>/.lock: released by the kernel when the process ends,
    so a killed run never leaves a stale lock behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / LOCK, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise BenchError(f"{run_dir} is being written by {holder}; wait for it to finish, or choose another "
                             "--out or --label") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


def _safe_config(system: System) -> dict[str, Any]:
    try:
        return system.config()
    except Exception as exc:  # a half-fitted system may not describe itself; the manifest must still be written
        return {"name": system.name, "config_error": f"{type(exc).__name__}: {exc}"}


def claim(run_dir: Path, ident: dict[str, Any]) -> None:
    """Tie `run_dir` to `ident`, or refuse if it holds a run made with something else."""
    marker = run_dir / IDENTITY
    if marker.exists():
        try:
            old = json.loads(marker.read_text())
        except json.JSONDecodeError:
            raise BenchError(f"{marker} is damaged; delete {run_dir} to start this run over") from None
        if old != ident:
            diffs = [f"{k}: {old.get(k)!r} there, {ident.get(k)!r} now" for k in sorted(set(old) | set(ident))
                     if old.get(k) != ident.get(k)]
            raise BenchError(f"{run_dir} holds a run made with other settings ({'; '.join(diffs)}); "
                             "choose another --out or --label, or delete that directory")
        return
    if run_dir.exists() and any(p.name != LOCK for p in run_dir.iterdir()):
        raise BenchError(f"{run_dir} exists and is not a run directory of this harness; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(marker, ident)


def read_identity(run_dir: Path) -> dict[str, Any]:
    marker = Path(run_dir) / IDENTITY
    if not marker.exists():
        raise BenchError(f"{run_dir} is not a run directory (no {IDENTITY}); make one with `bench generate`")
    return json.loads(marker.read_text())


def update_manifest(run_dir: Path, section: str, content: dict[str, Any]) -> None:
    """manifest.json holds one section per stage; a stage rewrites only its own."""
    path = Path(run_dir) / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest[section] = content
    write_json(path, manifest)


def _progress(it: Iterable, total: int, label: str, show: bool = True) -> Iterator:
    if not show:
        yield from it
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for x in it:
            yield x
            bar.advance(task)
