"""`external`: any report generator that runs as a command in its own environment.

The contract is ReXrank's: `CMD <input_json> <output_json> <img_root>`. This is how models
whose dependencies cannot share our environment (CheXagent pins transformers 4.40, MAIRA-2
needs 4.48-4.51) plug in: `bench env create NAME -r requirements.txt` makes an environment
and `--opt external.env=NAME` runs the command in it (`python` there is its interpreter), or
point `cmd` at an interpreter of a venv or container of your own.

input_json: {"<id>": {"image_path": ["<path relative to img_root>", ...], "views": ["PA", ...],
             "study_id": ..., "subject_id": ..., "view": "PA", "indication": "...",
             "priors": [{"study_id": ..., "text": "...", "report": "...", "days_before": 12.5}, ...]}, ...}
output_json: {"<id>": "<findings>"} or {"<id>": {"findings" | "report" | "model_prediction": "..."}}

The output file lives in the run directory (<run>/external/output.json) and is the command's
memory across attempts: what it holds is used (never generated again), a crash or a stop by
a time limit keeps every sample the command had written, and the next attempt is given only
the rest. Ids the command was asked for but did not write fail the run, listed by id (a
failure is never scored as an empty report); ids it wrote but was not asked for are listed
in the log and the manifest.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from pydantic import Field, field_validator

from bench.data.records import Query
from bench.errors import BenchError
from bench.options import OptionsModel
from bench.systems.base import Prediction, System
from bench.systems.command import CommandFailed, Limits, run_watched
from bench.systems.environments import EnvRecord, Environments

log = logging.getLogger(__name__)
OUTPUT_KEYS = ("findings", "report", "model_prediction", "prediction")
SHOW_IDS = 5  # ids named in a one-line message; all of them go to a file


class RunnerOptions(OptionsModel):
    """How a command is watched: shared by `external` and the adapters built on it."""

    timeout: float = Field(0, ge=0, description="seconds the whole command may run; 0: no limit")
    sample_timeout: float = Field(0, ge=0, description="seconds per sample: the command is stopped when no new sample "
                                  "appears in its output for this x batch_size; 0: off (for commands that write "
                                  "their output only at the end)")
    startup_timeout: float = Field(900, ge=0, description="extra seconds before the first output (loading a model)")
    batch_size: int = Field(1, ge=1, description="samples the command finishes at a time")


class ExternalSystem(System):
    name = "external"
    description = "a command following the ReXrank contract: CMD <input_json> <output_json> <img_root>"

    class Options(RunnerOptions):
        cmd: str = Field(description="the command; it is called as CMD <input_json> <output_json> <img_root>")
        env: str | None = Field(None, description="a `bench env` environment to run the command in")

        @field_validator("cmd")
        @classmethod
        def _not_blank(cls, v: str) -> str:
            if not shlex.split(v):
                raise ValueError("give the command, e.g. --opt external.cmd='python /path/inference.py'")
            return v

    def __init__(self, options: OptionsModel):
        super().__init__(options)
        # The environment is looked up now, so that a missing one is reported before any work.
        env_name = self.env_name()
        self.environment: EnvRecord | None = Environments().get(env_name) if env_name else None
        self.cmd = self.command()
        self.limits = Limits(timeout=options.timeout or None, sample_timeout=options.sample_timeout or None,
                             startup_timeout=options.startup_timeout, batch_size=options.batch_size)

    def env_name(self) -> str | None:
        """The `bench env` environment the command runs in; None: the harness's own."""
        return self.options.env

    def command(self) -> list[str]:
        """The command before the contract's three arguments."""
        return shlex.split(self.options.cmd)

    def generate(self, queries: Sequence[Query], ctx) -> Iterator[Prediction]:
        if not queries:
            return
        img_root = Path(ctx.data_root)
        work = Path(ctx.work_dir) / "external"
        work.mkdir(parents=True, exist_ok=True)
        inp, out = work / "input.json", work / "output.json"
        prov = {"command": shlex.join(self.cmd), "output_file": str(out)}
        if self.environment is not None:
            prov["env"] = self.environment.name

        earlier = read_output(out, tolerate_torn=True)
        reused = [q for q in queries if q.id in earlier]
        if reused:
            log.info("%d of %d samples are already in %s; not generated again", len(reused), len(queries), out)
        for q in reused:
            yield Prediction(q.id, earlier[q.id], {**prov, "from_earlier_attempt": True})
        todo = [q for q in queries if q.id not in earlier]
        if not todo:
            return

        payload = {q.id: input_record(q, img_root) for q in todo}
        _write_json(inp, payload)
        argv = [*self.cmd, str(inp), str(out), str(img_root)]
        log.info("running %s on %d samples: %s", self.name, len(todo), shlex.join(argv))
        counter = _OutputCounter(out, set(payload))
        failure: CommandFailed | None = None
        try:
            wall = run_watched(argv, label=self.name, log_dir=work, limits=self.limits, progress=counter,
                               env=self.environment.run_env() if self.environment else None)
            ctx.timings["external_command_s"] = ctx.timings.get("external_command_s", 0.0) + wall
        except CommandFailed as exc:
            failure = exc

        got = read_output(out, tolerate_torn=True)
        new_ids = set(got) - set(earlier)
        unknown = sorted(i for i in new_ids if i not in payload)
        for q in todo:
            if q.id in got:
                yield Prediction(q.id, got[q.id], dict(prov))
        missing = [q.id for q in todo if q.id not in got]
        record = ctx.used.setdefault("external", {})
        record.update({"command": prov["command"], "asked": len(todo), "written": len(todo) - len(missing)})
        if self.environment is not None:
            record["environment"] = self.environment.summary()
        if unknown:
            record["unknown_ids"] = unknown
            (work / "unknown-ids.txt").write_text("\n".join(unknown) + "\n")
            log.warning("%s wrote %d ids it was not asked for (%s); they are ignored (all in %s)", self.name,
                        len(unknown), _ids(unknown), work / "unknown-ids.txt")
        if missing:
            record["missing_ids"] = missing
            (work / "missing-ids.txt").write_text("\n".join(missing) + "\n")
        if failure is not None:
            kept = len(todo) - len(missing)
            if not kept:  # it failed before writing anything: its own reason is the whole story
                raise BenchError(str(failure)) from failure
            raise BenchError(f"{failure}; the {kept} samples it had written to {out} are kept, {len(missing)} "
                             f"remain ({_ids(missing)}; all in {work / 'missing-ids.txt'})") from failure
        if missing:
            stray = f"; it wrote ids it was not asked for: {_ids(unknown)}" if unknown else ""
            raise BenchError(f"{self.name} finished but its output {out} lacks {len(missing)} of {len(todo)} "
                             f"samples: {_ids(missing)} (all in {work / 'missing-ids.txt'}){stray}")

    def config(self) -> dict:
        cfg = {**super().config(), "argv": self.cmd}
        if self.environment is not None:
            cfg["environment"] = self.environment.summary()
        return cfg


def input_record(s: Query, img_root: Path) -> dict[str, Any]:
    try:
        rel = str(Path(s.image_path).relative_to(img_root))
    except ValueError:
        rel = str(s.image_path)
    return {"image_path": [rel], "views": [s.view], "study_id": s.study_id, "subject_id": s.subject_id,
            "view": s.view, "indication": s.indication,
            "priors": [{"study_id": p.study_id, "text": p.text, "report": p.report, "days_before": p.days_before}
                       for p in s.priors]}


def read_output(path: Path, tolerate_torn: bool = False) -> dict[str, str]:
    """id -> findings from a contract output file; {} when there is none. A file that is not
    JSON (a command killed while writing it) is moved aside with a warning when
    `tolerate_torn`, since what it held cannot be trusted; other malformations are errors."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if not tolerate_torn:
            raise BenchError(f"external output {path} is not valid JSON ({exc})") from None
        aside = path.with_name(f"{path.stem}.torn-{time.strftime('%Y%m%d-%H%M%S')}.json")
        os.replace(path, aside)
        log.warning("external output %s is not valid JSON (%s; written while the command was stopped?); "
                    "moved to %s and not used", path, exc, aside)
        return {}
    if not isinstance(raw, dict):
        raise BenchError(f"external output {path} must hold a JSON object keyed by sample id, "
                         f"not {type(raw).__name__}")
    result: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            result[str(key)] = value
        elif isinstance(value, dict) and any(isinstance(value.get(k), str) for k in OUTPUT_KEYS):
            result[str(key)] = next(value[k] for k in OUTPUT_KEYS if isinstance(value.get(k), str))
        else:
            raise BenchError(f"external output {path}: entry {key!r} has no text "
                             f"(expected a string or an object with one of {OUTPUT_KEYS})")
    return result


class _OutputCounter:
    """How many of the asked-for ids the output file holds; re-read only when it changed."""

    def __init__(self, path: Path, asked: set[str]):
        self.path, self.asked = path, asked
        self.stamp: tuple[int, int] | None = None
        self.count = 0

    def __call__(self) -> int:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self.count
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self.stamp:
            try:
                self.count = len(self.asked & set(json.loads(self.path.read_text(encoding="utf-8"))))
                self.stamp = stamp
            except (json.JSONDecodeError, UnicodeDecodeError, OSError, TypeError):
                pass  # caught mid-write: read it again next time
        return self.count


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOW_IDS])
    return shown + (f" and {len(ids) - SHOW_IDS} more" if len(ids) > SHOW_IDS else "")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, sort_keys=True))
    os.replace(tmp, path)
