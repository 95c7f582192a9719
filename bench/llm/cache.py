"""A SQLite cache of LLM responses, so that a re-run makes no calls and a killed run resumes.

The key is the SHA-256 of the canonical JSON of everything that can change an answer:
backend kind, model, messages and sampling parameters (temperature, max_tokens, seed,
stop, response format and JSON schema). Endpoint URLs are not part of it: several
servers of one model share the load and share the cache. Each response is committed as
soon as it arrives (a killed run keeps every answer it paid for); failures are never
stored. The database runs in WAL mode, so several processes can read while one writes.
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
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if self.mode == "readwrite":
                self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise BenchError(f"cannot open the LLM cache {self.path} ({e}); delete it or choose "
                             "another cache path") from e

    def get(self, key: str) -> CachedAnswer | None:
        if self._db is None:
            return None
        with self._lock:
            try:
                row = self._db.execute("SELECT text, prompt_tokens, completion_tokens, finish_reason "
                                       "FROM responses WHERE key = ?", (key,)).fetchone()
            except sqlite3.OperationalError:  # a read-only cache made by an older layout
                return None
        return CachedAnswer(*row) if row else None

    def put(self, key: str, backend: str, model: str, req: ChatRequest, resp: ChatResponse) -> None:
        if self._db is None or self.mode != "readwrite" or not resp.ok:
            return
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, backend, model, canonical_json(req.key_fields()), resp.text, resp.prompt_tokens,
                 resp.completion_tokens, resp.finish_reason, time.time()))

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            try:
                return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            except sqlite3.OperationalError:
                return 0

    def describe(self) -> dict:
        return {"path": str(self.path) if self.path else None, "mode": self.mode, "entries": len(self)}

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._db.close()
            self._db = None
