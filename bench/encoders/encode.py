"""Encode a split's images into the token cache: batched, resumable, shardable.

Images are decoded and preprocessed in a thread pool a few batches ahead of the model, so
JPEG decoding overlaps the forward passes. A re-run (after a kill, or with more images)
encodes only the ids the cache does not hold yet.

Bad images are isolated, never fatal and never silent:

* An image that cannot be decoded (even one that passed the reader's cheap JPEG start/end
  marker check, e.g. valid markers around garbage) is skipped, and so is an image whose
  tokens contain NaN or Inf (those tokens are never written). Each is listed with its reason
  in `EncodeReport.failed` (the harness copies the report into the run manifest) and
  recorded in the cache's failed list.
* Such an image has no token. The sample is not silently dropped: `load_tokens` for its id
  raises a DataError that names the image and says it was listed as undecodable or unusable
  at encode time, with the reason. Excluding it is left to the caller, who sees the list.

A run whose images are all cached already only reads: it does not take the shard's write
lock. Two runs encoding into one cache (the same split, or different ones) take turns on the
lock; the second then encodes only what the first did not.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from bench.data.records import Sample, Skipped
from bench.encoders.cache import ShardWriter, TokenCache, check_shard, shard_of
from bench.encoders.loader import Encoder

log = logging.getLogger(__name__)


@dataclass
class EncodeReport:
    """What an encoding run did. Every field is JSON-able (after dataclasses.asdict), since
    the harness writes the report into the run manifest."""

    fingerprint: str
    cache_dir: str  # the fingerprint's directory
    shard: tuple[int, int]
    in_shard: int  # distinct images this shard is responsible for
    encoded: int  # encoded by this run
    cached: int  # already in the cache before this run
    failed: list[Skipped] = field(default_factory=list)  # undecodable images, NaN/Inf tokens, and why
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"shard {self.shard[0]}/{self.shard[1]}: {self.encoded} encoded, "
                f"{self.cached} already cached, {len(self.failed)} failed "
                f"({self.seconds:.1f} s) -> {self.cache_dir}")


REASON_NON_FINITE = "encoder output contains NaN or Inf (tokens not cached)"


@dataclass
class _Batch:
    ids: list[str]
    pixel_values: torch.Tensor | None
    failed: list[tuple[str, Skipped]]  # (dicom_id, why)


def encode_dataset(
    samples: Sequence[Sample],
    encoder: Encoder,
    cache_dir: str | Path,
    batch_size: int = 32,
    num_workers: int | None = None,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> EncodeReport:
    """Put the CLS token of every sample's image (this shard's part) into the cache.

    shard=(i, n): encode only the ids with shard_of(dicom_id, n) == i; run n of these (in
    processes or on machines sharing `cache_dir`) to cover the split.
    num_workers: decoding threads (default min(4, CPUs)).
    on_batch(batches_done, encoded_so_far): called after each committed batch.
    """
    check_shard(shard)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
    workers = max(1, workers)
    started = time.perf_counter()

    mine: dict[str, Path] = {}
    for s in samples:
        if shard_of(s.dicom_id, shard[1]) == shard[0]:
            mine.setdefault(s.dicom_id, Path(s.image_path))
    cache = TokenCache(cache_dir, encoder.fingerprint, encoder.dim, encoder_name=encoder.name)
    have = cache.ids()
    todo = [(i, p) for i, p in mine.items() if i not in have]
    report = EncodeReport(fingerprint=encoder.fingerprint, cache_dir=str(cache.root), shard=shard,
                          in_shard=len(mine), encoded=0, cached=len(mine) - len(todo))
    if not todo:
        # Only reading: no write lock, so any number of readers run beside a writer.
        report.seconds = time.perf_counter() - started
        log.info("%s", report.summary())
        return report

    with cache.writer(shard) as writer:
        # Another process may have encoded some of these while this one waited for the lock.
        have = cache.ids()
        todo = [(i, p) for i, p in todo if i not in have]
        report.cached = len(mine) - len(todo)
        log.info("encoding %d images (%d already cached) with %s into %s",
                 len(todo), report.cached, encoder.name, cache.root)
        _encode_into(writer, todo, encoder, report, batch_size, workers, shard, progress, on_batch)

    report.seconds = time.perf_counter() - started
    for f in report.failed:
        log.warning("could not encode %s: %s", f.path, f.reason)
    log.info("%s", report.summary())
    return report


def _encode_into(writer: ShardWriter, todo: list[tuple[str, Path]], encoder: Encoder, report: EncodeReport,
                 batch_size: int, workers: int, shard: tuple[int, int], progress: bool,
                 on_batch: Callable[[int, int], None] | None) -> None:
    chunks = [todo[k:k + batch_size] for k in range(0, len(todo), batch_size)]
    bar = _ProgressBar(len(todo), f"encode {shard[0]}/{shard[1]}", enabled=progress)
    with ThreadPoolExecutor(workers, "decode") as pool, bar:
        pending: deque[Future[_Batch]] = deque()
        next_chunk = 0
        for done in range(1, len(chunks) + 1):
            # Keep a few batches decoding ahead of the model.
            while next_chunk < len(chunks) and len(pending) < workers + 1:
                pending.append(pool.submit(_load_batch, chunks[next_chunk], encoder))
                next_chunk += 1
            batch = pending.popleft().result()
            failed = list(batch.failed)
            n_done = len(batch.ids) + len(batch.failed)
            if batch.ids:
                tokens = np.asarray(encoder.forward(batch.pixel_values), dtype=np.float32)
                # A NaN or Inf token would poison every distance and dictionary fit downstream.
                finite = np.isfinite(tokens).all(axis=1)
                paths = dict(chunks[done - 1])
                failed += [(i, Skipped(str(paths[i]), REASON_NON_FINITE))
                           for i, ok in zip(batch.ids, finite) if not ok]
                keep = [i for i, ok in zip(batch.ids, finite) if ok]
                if keep:
                    writer.append(keep, tokens[finite])
                report.encoded += len(keep)
            writer.record_failures([(i, f.path, f.reason) for i, f in failed])
            report.failed.extend(f for _, f in failed)
            bar.advance(n_done)
            if on_batch is not None:
                on_batch(done, report.encoded)


def load_tokens(cache_dir: str | Path, fingerprint: str, ids: Sequence[str]) -> np.ndarray:
    """Tokens (len(ids), dim) float32 for these dicom_ids, merged over all shards.

    Raises DataError with the number missing when some were never encoded, and one that names
    the image and its reason when it was listed as undecodable (or gave NaN/Inf tokens).
    """
    return TokenCache(cache_dir, fingerprint).get(list(ids))


def read_image(path: Path) -> Image.Image:
    """Decode fully (so a truncated file fails here, not inside the processor) and make RGB."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def _load_batch(items: list[tuple[str, Path]], encoder: Encoder) -> _Batch:
    ids: list[str] = []
    images: list[Image.Image] = []
    failed: list[tuple[str, Skipped]] = []
    for dicom_id, path in items:
        try:
            images.append(read_image(path))
            ids.append(dicom_id)
        # Pillow raises more than OSError for malformed files (SyntaxError, struct.error,
        # IndexError, ...); any of them means this one image is unusable, not the run.
        except Exception as e:  # noqa: BLE001
            failed.append((dicom_id, Skipped(str(path), f"unreadable image ({type(e).__name__}: {e})")))
    if not images:
        return _Batch([], None, failed)
    try:
        return _Batch(ids, encoder.preprocess(images), failed)
    except Exception:  # noqa: BLE001 - isolate the image the processor rejects
        keep_ids, keep_px = [], []
        paths = dict(items)
        for dicom_id, im in zip(ids, images):
            try:
                keep_px.append(encoder.preprocess([im]))
                keep_ids.append(dicom_id)
            except Exception as e:  # noqa: BLE001
                failed.append((dicom_id, Skipped(str(paths[dicom_id]),
                                                 f"image processor failed ({type(e).__name__}: {e})")))
        px = torch.cat(keep_px) if keep_px else None
        return _Batch(keep_ids, px, failed)


class _ProgressBar:
    """A rich progress bar, or nothing when disabled (tests, logs to a file)."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.enabled = enabled and total > 0
        self.total, self.label = total, label
        self._progress = self._task = None

    def __enter__(self) -> "_ProgressBar":
        if self.enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeRemainingColumn())
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
