"""Reading predictions files: JSONL with id, reference and prediction on each line."""

from __future__ import annotations

import json
from pathlib import Path

from bench.errors import BenchError


def read_predictions_file(path: Path) -> tuple[list[str], list[str], list[str]]:
    if not Path(path).exists():
        raise BenchError(f"predictions file not found: {path}")
    ids, refs, preds = [], [], []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        missing = [k for k in ("id", "reference", "prediction") if k not in d]
        if missing:
            raise BenchError(f"{path}:{n}: missing field(s) {missing}; each line needs id, reference, prediction")
        if not isinstance(d["reference"], str) or not isinstance(d["prediction"], str):
            raise BenchError(f"{path}:{n}: reference and prediction must be strings")
        ids.append(str(d["id"]))
        refs.append(d["reference"])
        preds.append(d["prediction"])
    if not ids:
        raise BenchError(f"{path} holds no predictions")
    if len(set(ids)) != len(ids):
        raise BenchError(f"{path}: ids are not unique")
    return ids, refs, preds
