"""Report -> phrases with an LLM: few-shot, JSON output {"phrases": [...]}.

One call per report. The instructions and few-shot turns come first and the report last
(friendly to prefix caching). An answer that cannot be read as a list of strings is a
phrasing failure: the study is then invalid, as the reference implementation drops a
study whose report it could not parse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.llm import ChatRequest, ChatResponse, LLMError
from radfact.examples import PhraseExample, builtin_text, load_phrase_examples

PHRASES_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["phrases"],
    "properties": {"phrases": {"type": "array", "items": {"type": "string"}}}}


@dataclass(frozen=True)
class PhrasePrompts:
    system: str
    examples: tuple[PhraseExample, ...]

    @classmethod
    def load(cls, examples_path: Path | str | None = None, n_examples: int | None = None,
             system_path: Path | str | None = None) -> "PhrasePrompts":
        examples = load_phrase_examples(examples_path)
        if n_examples is not None:
            examples = examples[:n_examples]
        system = Path(system_path).read_text(encoding="utf-8") if system_path else builtin_text("phrases_system.txt")
        return cls(system, tuple(examples))


def _user(report: str) -> str:
    return f"Report:\n{report.strip()}"


def phrase_messages(prompts: PhrasePrompts, report: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": prompts.system}]
    for ex in prompts.examples:
        msgs.append({"role": "user", "content": _user(ex.report)})
        msgs.append({"role": "assistant", "content": json.dumps({"phrases": list(ex.phrases)})})
    msgs.append({"role": "user", "content": _user(report)})
    return msgs


def phrase_request(prompts: PhrasePrompts, report: str, max_tokens: int = 1024) -> ChatRequest:
    return ChatRequest(phrase_messages(prompts, report), max_tokens=max_tokens, json_schema=PHRASES_SCHEMA)


def parse_phrases(resp: ChatResponse) -> list[str] | None:
    """The phrases in an answer (blank ones dropped), or None when it cannot be read."""
    try:
        obj = resp.json()
    except LLMError:
        return None
    items = obj.get("phrases") if isinstance(obj, dict) else obj
    if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
        return None
    return [p.strip() for p in items if p.strip()]
