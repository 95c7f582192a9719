"""Metric registry: metric classes from the entry-point group `saerad_bench.metrics`.

Built-in metrics are declared in pyproject.toml exactly as a third party declares its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bench.errors import BenchError
from bench.metrics.base import Metric
from bench.registry import metrics as _registry


def metric_names() -> list[str]:
    return _registry.names()


def metric_class(name: str) -> type[Metric]:
    cls = _registry.load_class(name, Metric)
    if getattr(cls, "name", None) != name:
        raise BenchError(f"metric {name!r} is registered with a class named {getattr(cls, 'name', None)!r}; "
                         "the entry-point name and the class's `name` must agree")
    return cls


def get_metric(name: str, options: Mapping[str, Any] | None = None, cache_root: Path | None = None) -> Metric:
    """A metric built from raw option strings (validated by its Options model)."""
    return metric_class(name).from_options(options, cache_root)
