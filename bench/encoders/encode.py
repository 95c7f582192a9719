"""Encode a split's images into the token cache: batched, resumable, shardable.

Images are decoded and preprocessed in a thread pool a few batches ahead of the model, so
JPEG decoding overlaps the forward passes. A re-run (after a kill, or with more images)
encodes only the ids the cache does not hold yet. An unreadable image is reported with its
reason and skipped; it does not stop the run.
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
from bench.encoders.cache import TokenCache, check_shard, shard_of
from bench.encoders.loader import Encoder

log = logging.getLogger(__name__)


@dataclass
class EncodeReport:
    fingerprint: str
    cache_dir: Path  # the fingerprint's directory
    shard: tuple[int, int]
    in_shard: int  # distinct images this shard is responsible for
    encoded: int  # encoded by this run
    cached: int  # already in the cache before this run
    failed: list[Skipped] = field(default_factory=list)  # unreadable images and why
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"shard {self.shard[0]}/{self.shard[1]}: {self.encoded} encoded, "
                f"{self.cached} already cached, {len(self.failed)} failed "
                f"({self.seconds:.1f} s) -> {self.cache_dir}")


@dataclass
class _Batch:
    ids: list[str]
    pixel_values: torch.Tensor | None
    failed: list[Skipped]


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
    report = EncodeReport(fingerprint=encoder.fingerprint, cache_dir=cache.root, shard=shard,
                          in_shard=len(mine), encoded=0, cached=len(mine) - len(todo))
    log.info("encoding %d images (%d already cached) with %s into %s",
             len(todo), report.cached, encoder.name, cache.root)

    chunks = [todo[k:k + batch_size] for k in range(0, len(todo), batch_size)]
    bar = _ProgressBar(len(todo), f"encode {shard[0]}/{shard[1]}", enabled=progress)
    with cache.writer(shard) as writer, ThreadPoolExecutor(workers, "decode") as pool, bar:
        pending: deque[Future[_Batch]] = deque()
        next_chunk = 0
        for done in range(1, len(chunks) + 1):
            # Keep a few batches decoding ahead of the model.
            while next_chunk < len(chunks) and len(pending) < workers + 1:
                pending.append(pool.submit(_load_batch, chunks[next_chunk], encoder))
                next_chunk += 1
            batch = pending.popleft().result()
            report.failed.extend(batch.failed)
            if batch.ids:
                tokens = encoder.forward(batch.pixel_values)
                writer.append(batch.ids, tokens)
                report.encoded += len(batch.ids)
            bar.advance(len(batch.ids) + len(batch.failed))
            if on_batch is not None:
                on_batch(done, report.encoded)

    report.seconds = time.perf_counter() - started
    for f in report.failed:
        log.warning("could not encode %s: %s", f.path, f.reason)
    log.info("%s", report.summary())
    return report


def load_tokens(cache_dir: str | Path, fingerprint: str, ids: Sequence[str]) -> np.ndarray:
    """Tokens (len(ids), dim) float32 for these dicom_ids, merged over all shards.

    Raises DataError with the number missing when some were never encoded.
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
    failed: list[Skipped] = []
    for dicom_id, path in items:
        try:
            images.append(read_image(path))
            ids.append(dicom_id)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            failed.append(Skipped(str(path), f"unreadable image ({type(e).__name__}: {e})"))
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
                failed.append(Skipped(str(paths[dicom_id]), f"image processor failed ({type(e).__name__}: {e})"))
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
