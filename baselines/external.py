"""`external`: any report generator that runs as a command in its own environment.

The contract is ReXrank's: `CMD <input_json> <output_json> <img_root>`. This is how models
whose dependencies cannot share our environment (CheXagent pins transformers 4.40, MAIRA-2
needs 4.48-4.51) plug in: install them in their own venv or container and point `cmd` at
a script there.

input_json: {"<id>": {"image_path": ["<path relative to img_root>", ...], "study_id": ...,
             "subject_id": ..., "view": "PA", "indication": "...",
             "priors": [{"text": "...", "days_before": 12.5}, ...]}, ...}
output_json: {"<id>": "<findings>"} or {"<id>": {"findings" | "report" | "model_prediction": "..."}}

The output file is kept in the run directory: a re-run with the same input reuses it
instead of running the model again. Ids missing from the output get an empty prediction
(which scores as such) and are listed in the provenance and the log, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from pydantic import Field, field_validator

from bench.data.records import Query
from bench.errors import BenchError
from bench.jsonfiles import read_json
from bench.options import OptionsModel
from bench.systems.base import Prediction, System

log = logging.getLogger(__name__)
OUTPUT_KEYS = ("findings", "report", "model_prediction", "prediction")


class ExternalSystem(System):
    name = "external"
    description = "a command following the ReXrank contract: CMD <input_json> <output_json> <img_root>"

    class Options(OptionsModel):
        cmd: str = Field(description="the command; it is called as CMD <input_json> <output_json> <img_root>")
        timeout: float = Field(0, ge=0, description="seconds before the command is stopped; 0: no limit")

        @field_validator("cmd")
        @classmethod
        def _not_blank(cls, v: str) -> str:
            if not shlex.split(v):
                raise ValueError("give the command, e.g. --opt external.cmd='python /path/inference.py'")
            return v

    def __init__(self, options: Options):
        super().__init__(options)
        self.cmd = shlex.split(options.cmd)
        self.timeout = options.timeout or None

    def generate(self, queries: Sequence[Query], ctx) -> Iterator[Prediction]:
        if not queries:
            return
        img_root = ctx.data_root
        payload = {q.id: _input_record(q, img_root) for q in queries}
        blob = json.dumps(payload, sort_keys=True).encode()
        digest = hashlib.sha256(blob + " ".join(self.cmd).encode()).hexdigest()[:12]
        work = Path(ctx.work_dir) / "external"
        work.mkdir(parents=True, exist_ok=True)
        inp, out = work / f"input-{digest}.json", work / f"output-{digest}.json"
        if out.exists():
            log.info("reusing the external system's earlier output %s", out)
        else:
            inp.write_bytes(blob)
            self._run(inp, out, img_root, work)
        outputs = _read_output(out)
        missing = [q.id for q in queries if q.id not in outputs]
        if missing:
            log.warning("%d of %d ids missing from %s (first: %s); they get empty predictions",
                        len(missing), len(queries), out, missing[:3])
        prov_base = {"command": " ".join(self.cmd), "output_file": str(out)}
        for q in queries:
            text = outputs.get(q.id)
            prov = dict(prov_base)
            if text is None:
                prov["error"] = "missing from the command's output"
            yield Prediction(q.id, text or "", prov)

    def _run(self, inp: Path, out: Path, img_root: Path, work: Path) -> None:
        argv = [*self.cmd, str(inp), str(out), str(img_root)]
        log.info("running external system: %s", shlex.join(argv))
        t0 = time.perf_counter()
        tmp = out.with_suffix(".partial.json")
        argv[-2] = str(tmp)
        with open(work / "stdout.log", "ab") as so, open(work / "stderr.log", "ab") as se:
            try:
                proc = subprocess.run(argv, stdout=so, stderr=se, timeout=self.timeout)
            except FileNotFoundError as exc:
                raise BenchError(f"external command not found: {self.cmd[0]!r} ({exc})") from exc
            except subprocess.TimeoutExpired as exc:
                raise BenchError(f"external command timed out after {self.timeout}s; see {work}/stderr.log") from exc
        if proc.returncode != 0:
            tail = (work / "stderr.log").read_text(errors="replace")[-2000:]
            raise BenchError(f"external command exited with {proc.returncode}; stderr tail:\n{tail}")
        if not tmp.exists():
            raise BenchError(f"external command wrote no output file (expected {tmp})")
        tmp.replace(out)  # only a complete output is ever reused
        log.info("external system finished in %.1fs", time.perf_counter() - t0)

    def config(self) -> dict:
        return {**super().config(), "argv": self.cmd}


def _input_record(s: Query, img_root: Path) -> dict[str, Any]:
    try:
        rel = str(Path(s.image_path).relative_to(img_root))
    except ValueError:
        rel = str(s.image_path)
    return {"image_path": [rel], "study_id": s.study_id, "subject_id": s.subject_id, "view": s.view,
            "indication": s.indication,
            "priors": [{"text": p.text, "days_before": p.days_before} for p in s.priors]}


def _read_output(path: Path) -> dict[str, str]:
    raw = read_json(path, "external output", dict)  # a JSON object keyed by id
    result: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            result[str(key)] = value
        elif isinstance(value, dict) and any(k in value for k in OUTPUT_KEYS):
            result[str(key)] = str(next(value[k] for k in OUTPUT_KEYS if k in value))
        else:
            raise BenchError(f"external output {path}: entry {key!r} has no text "
                             f"(expected a string or an object with one of {OUTPUT_KEYS})")
    return result
