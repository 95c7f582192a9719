"""Predictions files: JSONL, one object per line.

Each line holds `id` and `prediction` (the findings text) and optionally `provenance`,
`reference` and `study_id`. The harness's own files (a run directory's predictions.jsonl)
carry no reference: the scorer joins references from the dataset by id. A user's file may
carry its own references instead (then no dataset is needed to score it), and study ids so
that the bootstrap resamples studies.

Lines are appended whole (the record and its newline in one write, flushed), so a kill can
only leave a final line without its newline; `read_predictions(..., torn_tail="drop")` drops
such a line (it is generated again on resume).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class PredictionRecord:
    id: str
    prediction: str
    reference: str | None = None
    study_id: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def read_predictions(path: Path, torn_tail: Literal["drop", "keep"] = "keep") -> list[PredictionRecord]:
    """Every record of a predictions file, in file order; a DataError names the bad line.

    torn_tail="drop": a final line without its newline (a write cut by a kill) is removed from
    the file and not returned; "keep": it is read like any other line (a user's file may simply
    lack the last newline)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"predictions file not found: {path}")
    raw = path.read_bytes()
    if torn_tail == "drop" and raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        log.warning("dropping a torn last line of %s (%d bytes); it is generated again", path, len(raw) - cut)
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        raw = raw[:cut]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc})") from None
    records: list[PredictionRecord] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        rec = _parse_line(path, n, line)
        if rec.id in seen:
            raise DataError(f"{path}:{n}: id {rec.id!r} appears twice")
        seen.add(rec.id)
        records.append(rec)
    return records


def _parse_line(path: Path, n: int, line: str) -> PredictionRecord:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}:{n}: expected a JSON object with id and prediction, got {type(d).__name__}")
    missing = [k for k in ("id", "prediction") if k not in d]
    if missing:
        raise DataError(f"{path}:{n}: missing field(s) {', '.join(missing)}; each line needs id and prediction "
                        "(and reference, unless the references come from a dataset)")
    for key in ("prediction", "reference"):
        if key in d and d[key] is not None and not isinstance(d[key], str):
            raise DataError(f"{path}:{n}: {key} must be a string, got {type(d[key]).__name__}")
    prov = d.get("provenance") or {}
    if not isinstance(prov, dict):
        raise DataError(f"{path}:{n}: provenance must be a JSON object")
    study = d.get("study_id")
    return PredictionRecord(str(d["id"]), d["prediction"], d.get("reference"),
                            None if study is None else str(study), prov)


class PredictionsWriter:
    """Appends records to a predictions file; each line is one write, flushed and synced."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "ab")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "PredictionsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
