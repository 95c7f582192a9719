"""A persistent store of per-text model outputs, shared by the model-based metrics.

Model-based metrics (RadGraph annotations, CheXbert labels) cost far more per text than the
scoring that follows, and the same texts come back again and again: every system of a
leaderboard is scored against the same references, retrieval baselines repeat training
reports, and `bench score` re-scores a finished run. So each output is stored once, keyed by

    (model fingerprint, SHA-256 of the exact text)

in SQLite (WAL mode, so several scoring processes can share one file), and committed in
chunks, so a killed run keeps everything it finished. The model fingerprint must change
whenever anything that can change an output changes (weights, vocabulary, code version);
`file_sha256` gives the content part of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[a-z_]+")


def text_key(text: str) -> str:
    """The cache key of a text: SHA-256 of its UTF-8 bytes (no normalisation at all)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes.

    A Hugging Face cache entry is a link to a blob named by its SHA-256 (for LFS files), so
    its hash comes for free; other files are read (about a second per 500 MB).
    """
    blob = Path(os.path.realpath(path)).name
    if _HEX64.fullmatch(blob):
        return blob
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TextCache:
    """SQLite table of JSON values keyed by (model fingerprint, text key)."""

    def __init__(self, path: Path, table: str = "outputs", value_column: str = "value"):
        # Names are interpolated into SQL, so only plain identifiers are accepted.
        if not (_NAME.fullmatch(table) and _NAME.fullmatch(value_column)):
            raise ValueError(f"bad table/column name {table!r}/{value_column!r}")
        self.path, self.table, self.column = path, table, value_column
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (model TEXT NOT NULL, text_sha TEXT NOT NULL, "
                         f"{value_column} TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (model, text_sha))")
        self._db.commit()

    def get_many(self, model: str, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT text_sha, {self.column} FROM {self.table} WHERE model = ? "
                                    f"AND text_sha IN ({marks})", [model, *chunk])
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, model: str, items: dict[str, Any]) -> None:
        now = time.time()
        self._db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?, ?, ?)",
                             [(model, k, json.dumps(v), now) for k, v in items.items()])
        self._db.commit()

    def get_or_compute(self, model: str, inputs: Mapping[str, Any], compute: Callable[[list[Any]], Sequence[Any]],
                       chunk: int, what: str) -> dict[str, Any]:
        """Values for every key of `inputs` (key -> the input it stands for).

        Stored values are read; the rest are computed by `compute` (a list of inputs -> their
        values, in order) `chunk` at a time, and each chunk is committed before the next, so a
        killed run keeps what it finished. `what` names the work in the log line.
        """
        found = self.get_many(model, list(inputs))
        missing = [k for k in inputs if k not in found]
        log.info("%s: %d distinct texts, %d stored before, %d to compute", what, len(inputs),
                 len(inputs) - len(missing), len(missing))
        for start in range(0, len(missing), chunk):
            keys = missing[start:start + chunk]
            fresh = dict(zip(keys, compute([inputs[k] for k in keys]), strict=True))
            self.put_many(model, fresh)
            found.update(fresh)
        return found

    def count(self, model: str) -> int:
        return self._db.execute(f"SELECT COUNT(*) FROM {self.table} WHERE model = ?", [model]).fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "TextCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
