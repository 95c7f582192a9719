"""Pieces shared by the command modules: the console, list and option parsing."""

from __future__ import annotations

from rich.console import Console

from bench.errors import BenchError

console = Console(stderr=True)


def split_list(values: list[str] | None) -> list[str]:
    """`-s a,b -s c` -> [a, b, c]."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def parse_pairs(values: list[str] | None, flag: str) -> list[tuple[str, str]]:
    out = []
    for item in values or []:
        if "=" not in item:
            raise BenchError(f"{flag} expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out.append((key.strip(), value))
    return out


def addressed(values: list[str] | None, flag: str, owners: list[str], kind: str) -> dict[str, dict[str, str]]:
    """`--opt saerad.tau=0.1` -> {"saerad": {"tau": "0.1"}}.

    Options are addressed to one owner, never broadcast; an unqualified key is accepted only
    when the run has exactly one owner (`--opt tau=0.1` with one system)."""
    out: dict[str, dict[str, str]] = {}
    for key, value in parse_pairs(values, flag):
        owner, dot, name = key.partition(".")
        if not dot:
            if len(owners) != 1:
                raise BenchError(f"{flag} {key}={value}: this run has several {kind}s ({', '.join(owners)}); "
                                 f"say which one, e.g. {flag} {owners[0]}.{key}={value}")
            owner, name = owners[0], key
        if not name:
            raise BenchError(f"{flag} {key}={value}: expected {kind}.key=value")
        out.setdefault(owner, {})[name] = value
    return out


def labels(values: list[str] | None, systems: list[str]) -> dict[str, str]:
    """`--label x64` (one system) or `--label saerad=x64` (any number)."""
    out: dict[str, str] = {}
    for item in values or []:
        if "=" in item:
            system, label = item.split("=", 1)
        elif len(systems) == 1:
            system, label = systems[0], item
        else:
            raise BenchError(f"--label {item}: this run has several systems; write --label SYSTEM=NAME")
        out[system.strip()] = label.strip()
    return out
