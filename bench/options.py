"""Coercing option values that may arrive as strings from the command line (`--opt k=v`)."""

from __future__ import annotations

from typing import Any

from bench.errors import BenchError

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_bool(what: str, value: Any) -> bool:
    """True/False from a bool or from 1/0, true/false, yes/no, on/off (any case)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise BenchError(f"{what}={value!r}: expected true or false")
