"""Signatures: how each number was computed, and whether two numbers may be compared.

A signature is an ordered mapping of settings, e.g. for BLEU
`metric:bleu|version:1|tok:ptb-coco|case:lower|punct:drop|n:4|ref:closest|smooth:coco|boot:study,1000,seed0`.
The metric contributes its own settings (`Metric.signature`); the scorer adds how the
intervals were made (`boot`). Two values whose signatures differ in any setting were computed
differently: tables and comparisons refuse to put them side by side, naming the setting,
unless told to show them marked.
"""

from __future__ import annotations

from typing import Any, Mapping


def format_signature(sig: Mapping[str, Any]) -> str:
    return "|".join(f"{k}:{v}" for k, v in sig.items())


def bootstrap_setting(bootstrap: Mapping[str, Any]) -> str:
    return f"{bootstrap.get('unit', 'sample')},{bootstrap.get('resamples', 0)},seed{bootstrap.get('seed', 0)}"


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The settings in which two signatures differ, as "key: a vs b" (empty: comparable)."""
    return [f"{k}: {a.get(k, '(none)')} vs {b.get(k, '(none)')}" for k in list(dict.fromkeys([*a, *b]))
            if str(a.get(k)) != str(b.get(k))]
