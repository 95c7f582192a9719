"""Token sources for the SAE library that only the harness knows about.

The SAE library (``saerad.sae``) reads arrays, ``.npy`` and ``.safetensors`` files and batch
iterators. The harness additionally stores CLS tokens in a token cache keyed by dicom_id
(``<cache_dir>/<fingerprint>/`` with ``meta.json``, see bench/encoders/cache.py); this module
reads such a directory, optionally restricted to a list of ids, into an array the library
accepts, and passes every other source through unchanged to the library's loader.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.errors import DataError
from saerad.sae.tokens import TokenSource, load_token_array

log = logging.getLogger(__name__)


def is_token_cache_dir(path: str | Path) -> bool:
    """Whether ``path`` is one encoder's directory of the harness token cache."""
    return (Path(path) / "meta.json").is_file()


def load_cache_tokens(path: str | Path, ids: Sequence[str] | None = None) -> np.ndarray:
    """The tokens of a token-cache fingerprint directory as a (tokens, d_in) float32 array.

    Without ``ids`` every cached token is returned, in sorted-id order: a fixed row order
    means a training seed gives the same batches on every machine. With ``ids`` the rows come
    in the order given (DataError names the ids that have no token).
    """
    from bench.encoders.cache import TokenCache

    path = Path(path)
    if not is_token_cache_dir(path):
        raise DataError(
            f"{path} is not a token-cache directory (no meta.json); pass a fingerprint directory "
            "<cache_dir>/<fingerprint> written by `bench encode`, or a .npy/.safetensors file"
        )
    cache = TokenCache(path.parent, path.name)
    wanted = sorted(cache.ids()) if ids is None else list(ids)
    if not wanted:
        raise DataError(f"token cache {path} is empty; run `bench encode` first")
    log.info("reading %d tokens from the token cache %s", len(wanted), path)
    return cache.get(wanted)


def load_tokens(source: TokenSource, ids: Sequence[str] | None = None) -> np.ndarray:
    """Tokens for ``saerad.sae`` from any source the ``bench sae`` commands accept.

    A token-cache directory is read here (``ids`` selects its rows); arrays, tensors, ``.npy``
    and ``.safetensors`` files go to ``saerad.sae.tokens.load_token_array``, whose errors
    (``saerad.sae.SAEDataError``) pass through. ``ids`` with any other source is a DataError:
    only the cache stores an id for each row.
    """
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return load_token_array(load_cache_tokens(source, ids))
    if ids is not None:
        raise DataError("token ids (--ids) can only select rows of a token-cache directory; "
                        "drop --ids or pass a <cache_dir>/<fingerprint> directory")
    return load_token_array(source)


def load_split_tokens(split: str, data_root: Path | None = None, reports: Path | None = None,
                      encoder: str | None = None, cache_dir: Path | None = None) -> np.ndarray:
    """The CLS tokens of one split of a dataset, in the split's sample order, as SAE-Rad trains on them.

    The token cache is shared by every dataset an encoder has seen, so training on a cache
    directory takes them all; a split names exactly the images of one dataset's split. What
    the cache lacks is encoded first (as `bench encode` would)."""
    from bench.stages.data import DataConfig, open_context

    ctx, ds = open_context(DataConfig(data_root=data_root, reports=reports, split=split, cache_dir=cache_dir,
                                      encoder=encoder))
    log.info("tokens: the %s split of %s (%d images)", split, ctx.data_root, len(ds.samples))
    return load_token_array(ctx.tokens(ds.samples, split))


def read_ids_file(path: str | Path) -> list[str]:
    """One dicom_id per line; blank lines and lines starting with # are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ids file {path} does not exist; write one dicom_id per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"ids file {path} is not UTF-8 text; write one dicom_id per line") from None
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


__all__ = ["is_token_cache_dir", "load_cache_tokens", "load_split_tokens", "load_tokens", "read_ids_file"]
