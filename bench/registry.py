"""Registries of plug-ins, read from Python entry points.

Built-in systems, metrics, LLM backends and command groups are declared in pyproject.toml
under the same entry-point groups a third-party package uses, so the first plug-in a
stranger writes follows the path our own code walks. A name registered twice (by two
packages, or twice by one) is an error naming both sources, never a silent shadowing.
Nothing is cached: a registry reads the installed packages' metadata when asked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from bench.errors import BenchError, UnknownNameError

log = logging.getLogger(__name__)

SYSTEMS = "saerad_bench.systems"
METRICS = "saerad_bench.metrics"
LLM_BACKENDS = "saerad_bench.llm_backends"
COMMANDS = "saerad_bench.commands"


class DuplicateNameError(BenchError):
    """Two plug-ins registered under one name."""


class PluginLoadError(BenchError):
    """A registered plug-in that cannot be imported."""


@dataclass(frozen=True)
class Registry:
    kind: str  # "system", "metric", ... for messages
    group: str  # entry-point group

    def entries(self) -> dict[str, metadata.EntryPoint]:
        found: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=self.group):
            if ep.name in found and found[ep.name].value != ep.value:
                raise DuplicateNameError(
                    f"{self.kind} {ep.name!r} is registered twice: {_source(found[ep.name])} and {_source(ep)}; "
                    "uninstall one of the packages or rename its entry point")
            found[ep.name] = ep
        if not found:
            raise BenchError(f"no {self.kind}s are registered (entry-point group {self.group}); "
                             "is saerad-bench installed? run `pip install -e .` in the repository")
        return found

    def names(self) -> list[str]:
        return sorted(self.entries())

    def load(self, name: str) -> Any:
        entries = self.entries()
        if name not in entries:
            raise UnknownNameError(self.kind, name, list(entries))
        try:
            return entries[name].load()
        except Exception as exc:  # a broken plug-in is named, with what went wrong
            raise PluginLoadError(f"{self.kind} {name!r} ({_source(entries[name])}) failed to load: "
                                  f"{type(exc).__name__}: {exc}") from exc

    def load_class(self, name: str, base: type) -> type:
        """`load`, checked to be a subclass of `base` (the plug-in interface)."""
        cls = self.load(name)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise BenchError(f"{self.kind} {name!r} is registered as {cls!r}, which is not a "
                             f"{base.__module__}.{base.__qualname__} class")
        return cls

    def load_all(self) -> dict[str, Any]:
        """Every plug-in that loads; the others are logged, so one broken plug-in hides nothing else."""
        out = {}
        for name in self.names():
            try:
                out[name] = self.load(name)
            except PluginLoadError as exc:
                log.warning("%s", exc)
        return out


def _source(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" in {dist.name} {dist.version}" if dist is not None else ""
    return f"{ep.value}{where}"


systems = Registry("system", SYSTEMS)
metrics = Registry("metric", METRICS)
llm_backends = Registry("LLM backend", LLM_BACKENDS)
commands = Registry("command group", COMMANDS)
