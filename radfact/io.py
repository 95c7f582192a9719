"""RadFact input and output files.

Input (`read_studies`), one of:
- JSONL, one study per line: {"id", "reference", "prediction"} (a `bench run` predictions
  file), or already phrased: {"id", "reference_phrases": [...], "prediction_phrases": [...]}
  (the two forms may be mixed per side);
- a JSON list in microsoft/RadFact's test-example format,
  [{"example_id", "input": {"phrases_A": [candidate phrases], "phrases_B": [reference phrases]}}],
  so its 34 bundled examples can be scored as published.

Output (`write_results`): one JSON line per study with its phrases, verdicts and scores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from bench.errors import BenchError
from radfact.evaluate import Study, StudyResult


def _phrases(value: Any, where: str, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise BenchError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def _text(value: Any, where: str, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BenchError(f"{where}: {key} must be a string")
    return value


def _study(d: dict, where: str) -> Study:
    if "input" in d and isinstance(d["input"], dict) and "phrases_A" in d["input"]:
        sid = d.get("example_id", d.get("id"))
        return Study(str(sid), reference_phrases=_phrases(d["input"].get("phrases_B"), where, "phrases_B"),
                     prediction_phrases=_phrases(d["input"]["phrases_A"], where, "phrases_A"))
    if "id" not in d:
        raise BenchError(f"{where}: no 'id'; each study needs id plus reference/prediction "
                         "(or reference_phrases/prediction_phrases)")
    ref = _text(d.get("reference"), where, "reference")
    pred = _text(d.get("prediction"), where, "prediction")
    ref_p = _phrases(d.get("reference_phrases"), where, "reference_phrases")
    pred_p = _phrases(d.get("prediction_phrases"), where, "prediction_phrases")
    if ref is None and ref_p is None or pred is None and pred_p is None:
        raise BenchError(f"{where}: study {d['id']!r} needs reference (or reference_phrases) and prediction "
                         "(or prediction_phrases)")
    # Given phrases win over text: they are what the user wants judged.
    return Study(str(d["id"]), reference=ref, prediction=pred, reference_phrases=ref_p, prediction_phrases=pred_p)


def read_studies(path: Path | str) -> list[Study]:
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"predictions file not found: {path}")
    text = path.read_text(encoding="utf-8")
    records: list[tuple[dict, str]] = []
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BenchError(f"{path}: not valid JSON ({e.msg})") from e
        records = [(d, f"{path}[{i}]") for i, d in enumerate(data)]
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((json.loads(line), f"{path}:{n}"))
            except json.JSONDecodeError as e:
                raise BenchError(f"{path}:{n}: not valid JSON ({e.msg})") from e
    studies = []
    for d, where in records:
        if not isinstance(d, dict):
            raise BenchError(f"{where}: expected a JSON object per study")
        studies.append(_study(d, where))
    if not studies:
        raise BenchError(f"{path} holds no studies")
    ids = [s.id for s in studies]
    if len(set(ids)) != len(ids):
        raise BenchError(f"{path}: study ids are not unique")
    return studies


def write_results(results: Iterable[StudyResult], path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in results:
            # NaN (a side with no phrases) is written as null: strict JSON readers reject NaN.
            row = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.as_dict().items()}
            f.write(json.dumps(row) + "\n")
