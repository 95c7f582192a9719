"""Write a dataset as JSON Lines: one `Sample.to_json()` object per line, in dataset order."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.data.records import Dataset


def export_jsonl(dataset: Dataset, out: Path) -> int:
    """Write `dataset`'s samples to `out` (parents created); returns how many were written.

    The file is written beside its final name and renamed into place, so an interrupted
    export never leaves a half-written file under `out`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for sample in dataset.samples:
            f.write(json.dumps(sample.to_json(), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, out)
    return n
