"""On-disk cache of CLS tokens, keyed by dicom_id and encoder fingerprint.

Layout, one directory per encoder fingerprint:

    <cache_dir>/<fingerprint>/meta.json              dim, dtype, encoder name
    <cache_dir>/<fingerprint>/s000-of-002.f32        float32 rows, appended in batches
    <cache_dir>/<fingerprint>/s000-of-002.index.tsv  "dicom_id<TAB>row" per committed row
    <cache_dir>/<fingerprint>/s000-of-002.failed.tsv "dicom_id<TAB>path<TAB>reason" per image
                                                     that could not be encoded
    <cache_dir>/<fingerprint>/s000-of-002.lock       held while a writer appends

Each shard (i of n) has its own files, so processes or machines encoding different shards of
one split never write to the same file; readers merge every index in the directory. Two
processes that open the same shard (two runs encoding into one cache) take turns: the second
waits for the lock and logs that it waits. Reading never takes the lock.

Images that could not be encoded (undecodable, or tokens with NaN/Inf) are recorded in the
shard's failed list, so that `get` can say why an image has no token instead of only that
it is missing. A later successful encode of the same id wins over an earlier failure.

Crash safety: a batch's rows are written to the data file and fsynced *before* their index
lines are appended (and fsynced). A kill at any moment therefore leaves, at worst, rows in the
data file that no index line points to, or a half-written last index line; both are ignored by
readers and cut off when the next writer opens the shard. An indexed row is always a complete,
durable row.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bench.errors import BenchError, DataError

log = logging.getLogger(__name__)

_DTYPE = np.dtype("<f4")  # little-endian float32, whatever the machine


def shard_of(dicom_id: str, n: int) -> int:
    """The shard (0..n-1) that owns an id: a stable hash, the same in every process and run."""
    digest = hashlib.sha256(dicom_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n


def parse_shard(text: str) -> tuple[int, int]:
    """Parse the CLI form "i/n" (0 <= i < n) into (i, n)."""
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise BenchError(f"bad shard {text!r}: write it as i/n, e.g. 0/4 for the first of four") from None
    check_shard((i, n))
    return i, n


def check_shard(shard: tuple[int, int]) -> None:
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise BenchError(f"bad shard {i}/{n}: need n >= 1 and 0 <= i < n (shards are numbered from 0)")


def _check_id(dicom_id: str) -> None:
    if not dicom_id or any(c in dicom_id for c in "\t\n\r"):
        raise DataError(f"dicom_id {dicom_id!r} cannot be cached: it is empty or holds a tab or newline")


@dataclass(frozen=True)
class _Location:
    data_file: Path
    row: int


class TokenCache:
    """Tokens of one encoder (by fingerprint) under `cache_dir`.

    `dim` is required to create a new cache and checked against an existing one; readers may
    leave it out and take it from meta.json.
    """

    def __init__(self, cache_dir: str | Path, fingerprint: str, dim: int | None = None,
                 encoder_name: str = ""):
        if not fingerprint or "/" in fingerprint:
            raise BenchError(f"bad encoder fingerprint {fingerprint!r}")
        self.cache_dir = Path(cache_dir)
        self.fingerprint = fingerprint
        self.root = self.cache_dir / fingerprint
        self.dim = self._init_meta(dim, encoder_name)

    # --- metadata ---------------------------------------------------------------------------

    def _init_meta(self, dim: int | None, encoder_name: str) -> int:
        meta_path = self.root / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if dim is not None and int(meta["dim"]) != dim:
                raise DataError(
                    f"token cache {self.root} holds {meta['dim']}-d tokens, but {dim}-d were "
                    "expected for the same encoder fingerprint; delete that directory and re-encode"
                )
            return int(meta["dim"])
        if dim is None:
            raise DataError(
                f"no token cache for encoder fingerprint {self.fingerprint[:12]}... under "
                f"{self.cache_dir}; run `bench encode` with this encoder first"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {"fingerprint": self.fingerprint, "dim": int(dim), "dtype": "float32",
                "encoder": encoder_name}
        # Several shard writers may start at once: each writes a private file and renames it
        # into place, so meta.json is never seen half-written.
        tmp = self.root / f".meta.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(tmp, meta_path)
        return int(dim)

    # --- reading ----------------------------------------------------------------------------

    def _index(self) -> dict[str, _Location]:
        """Every committed row of every shard. The first occurrence of an id wins."""
        index: dict[str, _Location] = {}
        for idx_file in sorted(self.root.glob("*.index.tsv")):
            data_file = idx_file.with_name(idx_file.name.removesuffix(".index.tsv") + ".f32")
            for dicom_id, row in _read_index(idx_file):
                index.setdefault(dicom_id, _Location(data_file, row))
        return index

    def failures(self) -> dict[str, tuple[str, str]]:
        """dicom_id -> (path, reason) of images recorded as not encodable; the last record wins."""
        out: dict[str, tuple[str, str]] = {}
        for f in sorted(self.root.glob("*.failed.tsv")):
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
                if not line.endswith("\n"):
                    break  # cut by a kill, like an index line
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 3:
                    out[parts[0]] = (parts[1], parts[2])
        return out

    def ids(self) -> set[str]:
        """The ids with a committed token."""
        return set(self._index())

    def __len__(self) -> int:
        return len(self._index())

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """Tokens (len(ids), dim) float32 in the order of `ids`; DataError if any is missing."""
        index = self._index()
        missing = [i for i in ids if i not in index]
        if missing:
            failures = self.failures()
            bad = [i for i in missing if i in failures]
            if bad:
                first = bad[0]
                path, reason = failures[first]
                raise DataError(
                    f"{len(bad)} of {len(ids)} requested images have no token because they were listed "
                    f"as undecodable or unusable when encoded into {self.root}: e.g. {first} ({path}): "
                    f"{reason}; they are in the encoding report's failed list. Fix or replace those "
                    "files and re-run `bench encode`, or leave them out of the samples"
                )
            raise DataError(
                f"{len(missing)} of {len(ids)} images have no token in {self.root} "
                f"(e.g. {', '.join(missing[:3])}); run `bench encode --split SPLIT --encoder MODEL` "
                "for that split and encoder first"
            )
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        by_file: dict[Path, list[tuple[int, int]]] = {}
        for k, i in enumerate(ids):
            loc = index[i]
            by_file.setdefault(loc.data_file, []).append((k, loc.row))
        for data_file, pairs in by_file.items():
            rows = _open_rows(data_file, self.dim)
            ks, rs = zip(*pairs)
            out[list(ks)] = rows[list(rs)]
        return out

    # --- writing ----------------------------------------------------------------------------

    def writer(self, shard: tuple[int, int] = (0, 1)) -> "ShardWriter":
        check_shard(shard)
        return ShardWriter(self, shard)


class ShardWriter:
    """Appends rows to one shard's files; use as a context manager.

    Holds an exclusive lock on the shard while open. A second process that opens the same
    shard waits (and says so in the log) until the first is done, instead of interleaving rows
    or failing: two runs encoding into one cache both finish. Callers must re-read `ids()`
    after entering, since the first process may have encoded what the second wanted.
    """

    def __init__(self, cache: TokenCache, shard: tuple[int, int]):
        self.cache = cache
        stem = f"s{shard[0]:03d}-of-{shard[1]:03d}"
        self.data_path = cache.root / f"{stem}.f32"
        self.index_path = cache.root / f"{stem}.index.tsv"
        self.failed_path = cache.root / f"{stem}.failed.tsv"
        self.lock_path = cache.root / f"{stem}.lock"
        self._row_bytes = cache.dim * _DTYPE.itemsize
        self._lock = self._data = self._idx = None
        self.rows = 0

    def __enter__(self) -> "ShardWriter":
        self._lock = open(self.lock_path, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # flock is released by the kernel when its holder dies, so waiting cannot hang on
            # a crashed writer; it only waits for a live one to finish.
            log.info("token cache: another process is writing shard %s of %s; waiting for it to finish",
                     self.data_path.stem, self.cache.root)
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX)
            except BaseException:
                self._lock.close()
                raise
            log.info("token cache: got the lock on shard %s of %s", self.data_path.stem, self.cache.root)
        self.rows = self._recover()
        self._data = open(self.data_path, "ab")
        self._idx = open(self.index_path, "a", encoding="utf-8")
        return self

    def _recover(self) -> int:
        """Cut the shard back to its committed state after a kill; return its row count."""
        committed = list(_read_index(self.index_path)) if self.index_path.exists() else []
        if self.index_path.exists():
            raw = self.index_path.read_bytes()
            keep = raw.rfind(b"\n") + 1  # drop a half-written last line
            if keep != len(raw):
                log.warning("token cache: dropping a half-written index line in %s", self.index_path)
                with open(self.index_path, "r+b") as f:
                    f.truncate(keep)
        rows = max((r for _, r in committed), default=-1) + 1
        if self.data_path.exists():
            size = self.data_path.stat().st_size
            if size < rows * self._row_bytes:
                raise DataError(
                    f"token cache shard {self.data_path} is shorter than its index says "
                    f"({size} bytes for {rows} rows); delete {self.cache.root} and re-encode"
                )
            if size > rows * self._row_bytes:
                log.warning("token cache: dropping %d uncommitted bytes from %s",
                            size - rows * self._row_bytes, self.data_path)
                with open(self.data_path, "r+b") as f:
                    f.truncate(rows * self._row_bytes)
        return rows

    def append(self, ids: Sequence[str], tokens: np.ndarray) -> None:
        """Write rows durably, then commit them to the index."""
        tokens = np.ascontiguousarray(tokens, dtype=_DTYPE)
        if tokens.shape != (len(ids), self.cache.dim):
            raise ValueError(f"tokens of shape {tokens.shape} for {len(ids)} ids of dim {self.cache.dim}")
        for i in ids:
            _check_id(i)
        assert self._data is not None and self._idx is not None, "use ShardWriter as a context manager"
        self._data.write(tokens.tobytes())
        self._data.flush()
        os.fsync(self._data.fileno())
        self._idx.write("".join(f"{i}\t{self.rows + k}\n" for k, i in enumerate(ids)))
        self._idx.flush()
        os.fsync(self._idx.fileno())
        self.rows += len(ids)

    def record_failures(self, failures: Sequence[tuple[str, str, str]]) -> None:
        """Append (dicom_id, path, reason) records for images that could not be encoded."""
        if not failures:
            return
        assert self._lock is not None, "use ShardWriter as a context manager"

        def clean(text: str) -> str:  # one record per line, three tab-separated fields
            return " ".join(str(text).split())

        with open(self.failed_path, "a", encoding="utf-8") as f:
            f.write("".join(f"{clean(i)}\t{clean(p)}\t{clean(r)}\n" for i, p, r in failures))
            f.flush()
            os.fsync(f.fileno())

    def __exit__(self, *exc) -> None:
        for f in (self._data, self._idx):
            if f is not None:
                f.close()
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


def _read_index(path: Path) -> Iterable[tuple[str, int]]:
    """Complete lines only: a line without its newline was cut by a kill and is not committed."""
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        dicom_id, _, row = line.rstrip("\n").partition("\t")
        yield dicom_id, int(row)


def _open_rows(data_file: Path, dim: int) -> np.ndarray:
    n = data_file.stat().st_size // (dim * _DTYPE.itemsize)
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return np.memmap(data_file, dtype=_DTYPE, mode="r", shape=(n, dim))
