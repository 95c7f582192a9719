"""The reading page's answers: SQLite in WAL mode, one row per (reader, sentence row).

Every answer is written as soon as it is given (one short transaction), so a closed browser
or a killed server loses nothing; WAL lets the import read while the server writes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from readerstudy.schema import Answer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    reader TEXT NOT NULL, row TEXT NOT NULL, action TEXT NOT NULL, categories TEXT NOT NULL,
    impact TEXT NOT NULL, edit TEXT NOT NULL, saved_at REAL NOT NULL, PRIMARY KEY (reader, row));
CREATE TABLE IF NOT EXISTS finished (reader TEXT PRIMARY KEY, at REAL NOT NULL);
"""


class AnswerStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")  # an answer acknowledged to the page is on disk
        con.executescript(_SCHEMA)
        return con

    def save(self, reader: str, row: str, answer: Answer) -> None:
        with closing(self._connect()) as con, con:
            con.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (reader, row) DO UPDATE SET "
                        "action=excluded.action, categories=excluded.categories, impact=excluded.impact, "
                        "edit=excluded.edit, saved_at=excluded.saved_at",
                        (reader, row, answer.action, json.dumps(answer.categories), answer.impact, answer.edit,
                         time.time()))

    def answers(self, reader: str | None = None) -> dict[tuple[str, str], Answer]:
        """{(reader, row): answer}; none when the page was never used."""
        if not self.path.exists():
            return {}
        with closing(self._connect()) as con:
            q = "SELECT reader, row, action, categories, impact, edit FROM answers"
            rows = con.execute(q + " WHERE reader = ?", (reader,)) if reader else con.execute(q)
            return {(r, row): Answer(a, json.loads(c), i, e) for r, row, a, c, i, e in rows}

    def finish(self, reader: str) -> None:
        with closing(self._connect()) as con, con:
            con.execute("INSERT OR REPLACE INTO finished VALUES (?, ?)", (reader, time.time()))

    def finished(self) -> set[str]:
        if not self.path.exists():
            return set()
        with closing(self._connect()) as con:
            return {r for (r,) in con.execute("SELECT reader FROM finished")}
