"""Token sources for SAE training and evaluation.

A token source is a 2-D float array (tokens, d_in): an in-memory numpy array or torch
tensor, a ``.npy`` file (memory-mapped), a ``.safetensors`` file (its ``tokens`` tensor, or its
only tensor), or a harness token-cache directory (``<cache_dir>/<fingerprint>/`` with
``meta.json``, see bench/encoders/cache.py), optionally restricted to a list of ids.

``iter_token_batches`` turns a source into an endless, reproducible stream of shuffled
batches. Batch number b of a stream depends only on (seed, b), which is what lets a resumed
training run continue with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch

from bench.errors import DataError

TokenSource = Union[str, Path, np.ndarray, torch.Tensor]


def load_token_array(source: TokenSource, ids: Sequence[str] | None = None) -> np.ndarray:
    """The tokens of a source as a 2-D float32 array (memory-mapped for .npy files).

    ``ids`` selects rows of a token-cache directory by dicom_id (e.g. the train split); it
    is an error for the other kinds of source, whose rows carry no ids.
    """
    if isinstance(source, torch.Tensor):
        arr = source.detach().cpu().numpy()
    elif isinstance(source, np.ndarray):
        arr = source
    else:
        arr = _load_path(Path(source), ids)
        ids = None
    if ids is not None:
        raise DataError("token ids can only select rows of a token-cache directory")
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"tokens must be a non-empty 2-D array (tokens, d_in); got shape {arr.shape}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def _load_path(path: Path, ids: Sequence[str] | None) -> np.ndarray:
    if not path.exists():
        raise DataError(f"token file {path} does not exist; pass a .npy, .safetensors or token-cache directory")
    if path.is_dir():
        return _load_cache_dir(path, ids)
    if ids is not None:
        raise DataError("token ids (--ids) can only select rows of a token-cache directory")
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        if "tokens" in tensors:
            return tensors["tokens"]
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        raise DataError(
            f"{path} holds tensors {sorted(tensors)}; name the token matrix 'tokens' or keep only one"
        )
    raise DataError(f"unsupported token file {path}: use .npy, .safetensors or a token-cache directory")


def _load_cache_dir(path: Path, ids: Sequence[str] | None) -> np.ndarray:
    if not (path / "meta.json").is_file():
        raise DataError(
            f"{path} is a directory without meta.json; pass a token-cache fingerprint directory "
            "(<cache_dir>/<fingerprint>) or a .npy/.safetensors file"
        )
    from bench.encoders.cache import TokenCache  # the harness cache, only needed here

    cache = TokenCache(path.parent, path.name)
    # Sorted ids give a fixed row order, so a seed means the same batches on every machine.
    wanted = sorted(cache.ids()) if ids is None else list(ids)
    if not wanted:
        raise DataError(f"token cache {path} is empty; run `bench encode` first")
    return cache.get(wanted)


def read_ids_file(path: str | Path) -> list[str]:
    """One id per line; blank lines and lines starting with # are ignored."""
    lines = Path(path).read_text().splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def iter_token_batches(
    source: TokenSource,
    batch_size: int,
    seed: int = 0,
    *,
    start_batch: int = 0,
    shuffle: bool = True,
    epochs: int | None = None,
    ids: Sequence[str] | None = None,
) -> Iterator[torch.Tensor]:
    """Float32 batches (batch_size, d_in), reshuffled every epoch, endless unless ``epochs``.

    Epoch e visits the tokens in the order ``default_rng([seed, e]).permutation(N)``; the
    last partial batch of an epoch is dropped so that every batch has the same size.
    ``start_batch`` skips ahead without reading the skipped batches (used by resume).
    """
    arr = load_token_array(source, ids)
    n = arr.shape[0]
    if batch_size <= 0:
        raise DataError(f"batch size must be positive, got {batch_size}")
    if n < batch_size:
        raise DataError(f"only {n} tokens but batch size {batch_size}; lower --batch-size or add tokens")
    per_epoch = n // batch_size
    epoch, offset = divmod(start_batch, per_epoch)
    while epochs is None or epoch < epochs:
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        for b in range(offset, per_epoch):
            rows = order[b * batch_size : (b + 1) * batch_size]
            yield torch.from_numpy(np.ascontiguousarray(arr[rows], dtype=np.float32))
        epoch, offset = epoch + 1, 0


def iter_token_chunks(source: TokenSource, chunk: int = 8192, ids: Sequence[str] | None = None) -> Iterator[torch.Tensor]:
    """One ordered pass over all tokens in chunks (for scale estimation and evaluation)."""
    arr = load_token_array(source, ids)
    for i in range(0, arr.shape[0], chunk):
        # A copy: slices of a memory-mapped file are read-only, which torch warns about.
        yield torch.from_numpy(np.array(arr[i : i + chunk], dtype=np.float32))
