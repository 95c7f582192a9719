"""Metric registry: name -> factory. Built-in metrics register on import of bench.metrics."""

from __future__ import annotations

from typing import Callable

from bench.errors import UnknownNameError
from bench.metrics.base import Metric

_FACTORIES: dict[str, Callable[..., Metric]] = {}


def register_metric(name: str):
    def deco(factory: Callable[..., Metric]):
        _FACTORIES[name] = factory
        return factory

    return deco


def metric_names() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def get_metric(name: str, **kwargs) -> Metric:
    _load_builtins()
    if name not in _FACTORIES:
        raise UnknownNameError("metric", name, list(_FACTORIES))
    return _FACTORIES[name](**kwargs)


def _load_builtins() -> None:
    # Imported lazily so that `bench --help` does not pay for java/torch checks.
    import bench.metrics.chexbert  # noqa: F401
    import bench.metrics.chexpert_rules  # noqa: F401
    import bench.metrics.nlg  # noqa: F401
    import bench.metrics.radgraph  # noqa: F401
    import radfact.metric  # noqa: F401
