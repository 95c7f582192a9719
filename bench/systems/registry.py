"""System registry: System classes from the entry-point group `saerad_bench.systems`
(built-ins are declared in pyproject.toml exactly as third-party systems are)."""

from __future__ import annotations

from typing import Any, Mapping

from bench.registry import systems as _registry
from bench.systems.base import System


def system_names() -> list[str]:
    return _registry.names()


def system_class(name: str) -> type[System]:
    return _registry.load_class(name, System)


def available_systems() -> dict[str, type[System]]:
    """Every registered system that loads (a broken plug-in is logged, not fatal here)."""
    return {n: c for n, c in _registry.load_all().items() if isinstance(c, type) and issubclass(c, System)}


def get_system(name: str, options: Mapping[str, Any] | None = None) -> System:
    return system_class(name).from_options(options)
