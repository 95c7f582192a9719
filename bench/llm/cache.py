"""A SQLite cache of LLM responses, so that a re-run makes no calls and a killed run resumes.

The key is the SHA-256 of the canonical JSON of everything that can change an answer:
backend kind, model, messages and sampling parameters (temperature, max_tokens, seed,
stop, response format and JSON schema). Endpoint URLs are not part of it: several
servers of one model share the load and share the cache. Each response is committed as
soon as it arrives (a killed run keeps every answer it paid for); failures and empty
completions are never stored (and an empty one left by an older version reads as a miss).
The database runs in WAL mode, so several processes can read while one writes.

A damaged database (not SQLite at all, truncated, a malformed page) raises
`CacheCorruptError` when it is opened or first read, naming the file and how to recover:
a batch of requests must not turn it into a run of failed requests.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.errors import BenchError
from bench.llm.base import ChatRequest, ChatResponse, canonical_json

log = logging.getLogger(__name__)

CacheMode = Literal["readwrite", "readonly", "off"]
CACHE_MODES = ("readwrite", "readonly", "off")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT,
    created REAL NOT NULL
)
"""


def cache_key(backend: str, model: str, req: ChatRequest) -> str:
    return hashlib.sha256(canonical_json(key_document(backend, model, req)).encode()).hexdigest()


def key_document(backend: str, model: str, req: ChatRequest) -> dict:
    """The value whose canonical JSON is hashed into the key (kept for inspection)."""
    return {"backend": backend, "model": model, **req.key_fields()}


class CacheCorruptError(BenchError):
    """The cache file is damaged; the message names it and says how to recover."""


# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
_CORRUPT_CODES = (11, 26)


def _is_corrupt(e: sqlite3.DatabaseError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    # No code (older Python): OperationalError is locking and the like; plain DatabaseError
    # is what sqlite3 raises for "file is not a database" and "disk image is malformed".
    return type(e) is sqlite3.DatabaseError


@dataclass
class CachedAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None


class ResponseCache:
    """mode: "readwrite" (default), "readonly" (use what is there, store nothing new, e.g.
    to replay a run exactly) or "off" (neither read nor write; `--no-cache`)."""

    def __init__(self, path: Path | str | None, mode: CacheMode = "readwrite"):
        if mode not in CACHE_MODES:
            raise BenchError(f"unknown LLM cache mode {mode!r}; choose one of {', '.join(CACHE_MODES)}")
        self.path = Path(path) if path is not None else None
        self.mode: CacheMode = mode if self.path is not None else "off"
        self._lock = threading.Lock()  # one connection, used from the event loop's thread
        self._db: sqlite3.Connection | None = None
        if self.mode == "off":
            return
        assert self.path is not None
        if self.mode == "readonly" and not self.path.exists():
            log.warning("LLM cache %s does not exist; read-only mode will answer nothing from it", self.path)
            self.mode = "off"
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit (isolation_level=None): every put is durable when it returns.
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
            self._check_intact()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if self.mode == "readwrite":
                self._db.execute(_SCHEMA)
        except CacheCorruptError:
            self._drop_connection()
            raise
        except sqlite3.DatabaseError as e:
            self._drop_connection()
            if _is_corrupt(e):
                raise self._corrupt(str(e)) from e
            raise BenchError(f"cannot open the LLM cache {self.path} ({e}); delete it or choose "
                             "another cache path") from e

    def _check_intact(self) -> None:
        """Cheap checks that find a damaged file at open rather than mid-run: the schema
        must read, and the file must be as long as its header says. A full integrity check
        would read every page of what may be a large file, so the rest is found on use."""
        assert self._db is not None and self.path is not None
        self._db.execute("SELECT name FROM sqlite_master").fetchall()
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            return  # pages may live in the write-ahead log: the main file may be shorter
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        size = self.path.stat().st_size
        if size < pages * page_size:
            raise self._corrupt(f"truncated: {size} bytes where its header says {pages * page_size}")

    def _corrupt(self, what: str) -> CacheCorruptError:
        return CacheCorruptError(
            f"the LLM response cache {self.path} is damaged ({what}); move it away (with any "
            f"{self.path.name}-wal and -shm next to it), or delete it or choose another cache path, and "
            "run again: the answers stored in it are lost and will be asked of the LLM again")

    def _drop_connection(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def _raise_if_corrupt(self, e: sqlite3.DatabaseError) -> None:
        if _is_corrupt(e):
            raise self._corrupt(str(e)) from e

    def get(self, key: str) -> CachedAnswer | None:
        if self._db is None:
            return None
        with self._lock:
            try:
                row = self._db.execute("SELECT text, prompt_tokens, completion_tokens, finish_reason "
                                       "FROM responses WHERE key = ?", (key,)).fetchone()
            except sqlite3.OperationalError:  # a read-only cache made by an older layout
                return None
            except sqlite3.DatabaseError as e:
                self._raise_if_corrupt(e)
                raise
        if not row or not str(row[0]).strip():
            # An empty completion stored by an older version is no answer: ask again.
            return None
        return CachedAnswer(*row)

    def put(self, key: str, backend: str, model: str, req: ChatRequest, resp: ChatResponse) -> None:
        # Only answers are stored: a failure or an empty completion must be asked again.
        if self._db is None or self.mode != "readwrite" or not resp.ok or not resp.text.strip():
            return
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, backend, model, canonical_json(req.key_fields()), resp.text, resp.prompt_tokens,
                     resp.completion_tokens, resp.finish_reason, time.time()))
            except sqlite3.DatabaseError as e:
                self._raise_if_corrupt(e)
                raise

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            try:
                return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            except sqlite3.OperationalError:
                return 0
            except sqlite3.DatabaseError as e:
                self._raise_if_corrupt(e)
                raise

    def describe(self) -> dict:
        return {"path": str(self.path) if self.path else None, "mode": self.mode, "entries": len(self)}

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._db.close()
            self._db = None
