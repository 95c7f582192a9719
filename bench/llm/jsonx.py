"""Tolerant JSON extraction from model text.

Servers without structured output (and small models even with it) wrap JSON in prose or
Markdown fences. We take, in order: the whole text; the body of each ``` fence; the first
object or array that decodes, scanning from each '{' or '['. The decoder does the brace
matching, so braces inside strings cannot fool it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bench.llm.base import LLMOutputError

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The first JSON object or array in `text`; LLMOutputError when there is none."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    for body in _FENCE.findall(text):
        try:
            return json.loads(body.strip())
        except json.JSONDecodeError:
            continue
    decoder = json.JSONDecoder()
    for m in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        return value
    snippet = stripped[:120] + ("..." if len(stripped) > 120 else "")
    raise LLMOutputError(f"no JSON object or array in the model's answer: {snippet!r}")


def parses_as_json(text: str) -> bool:
    try:
        extract_json(text)
        return True
    except LLMOutputError:
        return False
