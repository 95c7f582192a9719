"""System registry: built-in systems plus third-party ones from the entry-point group
`saerad_bench.systems` (value: a System subclass), as lm-evaluation-harness does for tasks."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from bench.errors import UnknownNameError
from bench.systems.base import System

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "saerad_bench.systems"


def _builtin() -> dict[str, type[System]]:
    from baselines.constant import ConstantSystem
    from baselines.external import ExternalSystem
    from baselines.nn import NearestNeighbourSystem
    from baselines.reference import ReferenceSystem

    classes: list[type[System]] = [NearestNeighbourSystem, ReferenceSystem, ConstantSystem, ExternalSystem]
    try:
        from saerad.system import SaeRadSystem  # present once SAE-Rad end to end lands
        classes.append(SaeRadSystem)
    except ImportError:
        pass
    return {c.name: c for c in classes}


def available_systems() -> dict[str, type[System]]:
    systems = _builtin()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plug-in must not hide the others
            log.warning("could not load system plug-in %s (%s): %s", ep.name, ep.value, exc)
            continue
        if ep.name in systems:
            log.warning("plug-in system %s shadows a built-in one; ignoring the plug-in", ep.name)
            continue
        systems[ep.name] = cls
    return systems


def get_system(name: str, **options) -> System:
    systems = available_systems()
    if name not in systems:
        raise UnknownNameError("system", name, list(systems))
    return systems[name](**options)
