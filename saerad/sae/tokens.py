"""Token sources for SAE training and evaluation.

A token source is a 2-D float array (tokens, d_in): an in-memory numpy array or torch
tensor, a ``.npy`` file (memory-mapped) or a ``.safetensors`` file (its ``tokens`` tensor, or
its only tensor). The trainer and ``evaluate_sae`` also take any iterable of token batches.
Stores of tokens keyed by image ids (the harness's token cache) are read by their owners into
an array first, so that this library needs nothing but numpy, torch and safetensors.

``iter_token_batches`` turns a source into an endless, reproducible stream of shuffled
batches. Batch number b of a stream depends only on (seed, b), which is what lets a resumed
training run continue with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch

from saerad.sae.errors import SAEDataError

TokenSource = Union[str, Path, np.ndarray, torch.Tensor]

_FILE_KINDS = "a .npy or .safetensors file, or a 2-D array"


def load_token_array(source: TokenSource) -> np.ndarray:
    """The tokens of a source as a 2-D float32 array (memory-mapped for .npy files)."""
    if isinstance(source, torch.Tensor):
        arr = source.detach().cpu().numpy()
    elif isinstance(source, np.ndarray):
        arr = source
    elif isinstance(source, (str, Path)):
        arr = _load_path(Path(source))
    else:
        raise SAEDataError(
            f"cannot read tokens from a {type(source).__name__}; pass {_FILE_KINDS} "
            "(the trainer and evaluate_sae also take an iterable of token batches)"
        )
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise SAEDataError(f"tokens must be a non-empty 2-D array (tokens, d_in); got shape {arr.shape}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def _load_path(path: Path) -> np.ndarray:
    if not path.exists():
        raise SAEDataError(f"token file {path} does not exist; pass {_FILE_KINDS}")
    if path.is_dir():
        raise SAEDataError(
            f"{path} is a directory; pass {_FILE_KINDS}. To use a token-cache directory of "
            "the harness, read it into an array first (saerad.harness_tokens.load_tokens)"
        )
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        if "tokens" in tensors:
            return tensors["tokens"]
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        raise SAEDataError(
            f"{path} holds tensors {sorted(tensors)}; name the token matrix 'tokens' or keep only one"
        )
    raise SAEDataError(f"unsupported token file {path}: use .npy or .safetensors")


def iter_token_batches(
    source: TokenSource,
    batch_size: int,
    seed: int = 0,
    *,
    start_batch: int = 0,
    shuffle: bool = True,
    epochs: int | None = None,
) -> Iterator[torch.Tensor]:
    """Float32 batches (batch_size, d_in), reshuffled every epoch, endless unless ``epochs``.

    Epoch e visits the tokens in the order ``default_rng([seed, e]).permutation(N)``; the
    last partial batch of an epoch is dropped so that every batch has the same size.
    ``start_batch`` skips ahead without reading the skipped batches (used by resume).
    """
    arr = load_token_array(source)
    n = arr.shape[0]
    if batch_size <= 0:
        raise SAEDataError(f"batch size must be positive, got {batch_size}")
    if n < batch_size:
        raise SAEDataError(f"only {n} tokens but batch size {batch_size}; lower the batch size or add tokens")
    per_epoch = n // batch_size
    epoch, offset = divmod(start_batch, per_epoch)
    while epochs is None or epoch < epochs:
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        for b in range(offset, per_epoch):
            rows = order[b * batch_size : (b + 1) * batch_size]
            yield torch.from_numpy(np.ascontiguousarray(arr[rows], dtype=np.float32))
        epoch, offset = epoch + 1, 0


def iter_token_chunks(source: TokenSource, chunk: int = 8192) -> Iterator[torch.Tensor]:
    """One ordered pass over all tokens in chunks (for scale estimation and evaluation)."""
    arr = load_token_array(source)
    for i in range(0, arr.shape[0], chunk):
        # A copy: slices of a memory-mapped file are read-only, which torch warns about.
        yield torch.from_numpy(np.array(arr[i : i + chunk], dtype=np.float32))
