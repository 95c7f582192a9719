"""Entailment verification: is each hypothesis phrase entailed by the other report's phrases?

Two modes, both asking for JSON (schema-constrained where the server supports it, read
tolerantly otherwise):

- faithful: one call per hypothesis phrase against the full premise list, answering
  {"phrase", "status", "evidence"}, as the reference implementation does. The judge
  echoes the phrase; an echo that differs is a *rewrite* (counted, and the original
  phrase kept).
- batched: one call per direction of a study, all hypotheses at once, answering
  {"verdicts": [{"index", "status", "evidence"}, ...]}; a hypothesis with no verdict is a
  failure.

Prompts put the fixed parts first (instructions, then the few-shot turns) and the study's
phrases last, so a server with prefix caching (vLLM) computes the shared prefix once.
Premise phrases are numbered from 1; evidence names them by number (text is accepted too).

Outcomes per hypothesis (`Verdict`), following the reference implementation:
- an answer that cannot be read (failed call, no JSON, unknown status, "entailment"
  without evidence) is a failure: counted, and not entailed;
- evidence that names no premise phrase makes the study invalid (it is dropped from the
  means and counted).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench.errors import BenchError
from bench.llm import ChatRequest, ChatResponse, LLMError
from radfact.examples import (ENTAILED, NOT_ENTAILED, EntailmentExample, builtin_text, load_entailment_examples,
                              normalise)

log = logging.getLogger(__name__)

MODES = ("faithful", "batched")

_STATUS = {"entailment": True, "entailed": True, "yes": True, "true": True,
           "not_entailment": False, "not entailment": False, "not_entailed": False, "not entailed": False,
           "contradiction": False, "neutral": False, "no": False, "false": False}

_EVIDENCE = {"type": "array", "items": {"type": "integer"}}
_STATUS_SCHEMA = {"type": "string", "enum": [ENTAILED, NOT_ENTAILED]}
FAITHFUL_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["phrase", "status", "evidence"],
    "properties": {"phrase": {"type": "string"}, "status": _STATUS_SCHEMA, "evidence": _EVIDENCE}}
BATCHED_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["verdicts"],
    "properties": {"verdicts": {"type": "array", "items": {
        "type": "object", "additionalProperties": False, "required": ["index", "status", "evidence"],
        "properties": {"index": {"type": "integer"}, "status": _STATUS_SCHEMA, "evidence": _EVIDENCE}}}}}


@dataclass(frozen=True)
class Verdict:
    entailed: bool
    evidence: tuple[int, ...] = ()  # 0-based premise indices
    failed: bool = False  # no readable answer: counted, and not entailed
    rewritten: bool = False  # faithful mode: the judge echoed a different phrase
    evidence_mismatch: bool = False  # evidence names no premise phrase: the study is invalid


FAILED = Verdict(entailed=False, failed=True)


@dataclass(frozen=True)
class EntailmentPrompts:
    faithful_system: str
    batched_system: str
    examples: tuple[EntailmentExample, ...]

    @classmethod
    def load(cls, examples_path: Path | str | None = None, n_examples: int | None = None,
             faithful_system_path: Path | str | None = None,
             batched_system_path: Path | str | None = None) -> "EntailmentPrompts":
        """Our prompts and examples, or files given by path (ours or microsoft/RadFact's format).

        n_examples keeps the first n one-way examples (a short prefix for small contexts)."""
        examples = load_entailment_examples(examples_path)
        if n_examples is not None:
            examples = examples[:n_examples]
        return cls(_text(faithful_system_path, "entailment_system.txt"),
                   _text(batched_system_path, "entailment_batched_system.txt"), tuple(examples))


def _text(path: Path | str | None, builtin: str) -> str:
    if path is None:
        return builtin_text(builtin)
    p = Path(path)
    if not p.is_file():
        raise BenchError(f"prompt file {p} does not exist")
    return p.read_text(encoding="utf-8")


# -- prompt text -------------------------------------------------------------

def _numbered(phrases: Sequence[str]) -> str:
    return "\n".join(f"{i}. {p}" for i, p in enumerate(phrases, 1)) if phrases else "(none)"


def faithful_user(premise: Sequence[str], hypothesis: str) -> str:
    # Premises before the hypothesis: the calls for one direction of a study then share
    # everything but their last line, which prefix caching turns into saved compute.
    return f"Premise phrases:\n{_numbered(premise)}\n\nHypothesis: {hypothesis}"


def batched_user(premise: Sequence[str], hypotheses: Sequence[str]) -> str:
    return f"Premise phrases:\n{_numbered(premise)}\n\nHypotheses:\n{_numbered(hypotheses)}"


def _answer(v_entailed: bool, evidence: Sequence[int]) -> dict[str, Any]:
    return {"status": ENTAILED if v_entailed else NOT_ENTAILED, "evidence": [i + 1 for i in evidence]}


def faithful_messages(prompts: EntailmentPrompts, premise: Sequence[str], hypothesis: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": prompts.faithful_system}]
    for ex in prompts.examples:
        for h, v in zip(ex.hypotheses, ex.verdicts):
            msgs.append({"role": "user", "content": faithful_user(ex.premise, h)})
            msgs.append({"role": "assistant", "content": json.dumps({"phrase": h, **_answer(v.entailed, v.evidence)})})
    msgs.append({"role": "user", "content": faithful_user(premise, hypothesis)})
    return msgs


def batched_messages(prompts: EntailmentPrompts, premise: Sequence[str],
                     hypotheses: Sequence[str]) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": prompts.batched_system}]
    for ex in prompts.examples:
        verdicts = [{"index": i, **_answer(v.entailed, v.evidence)} for i, v in enumerate(ex.verdicts, 1)]
        msgs.append({"role": "user", "content": batched_user(ex.premise, ex.hypotheses)})
        msgs.append({"role": "assistant", "content": json.dumps({"verdicts": verdicts})})
    msgs.append({"role": "user", "content": batched_user(premise, hypotheses)})
    return msgs


def faithful_request(prompts: EntailmentPrompts, premise: Sequence[str], hypothesis: str,
                     max_tokens: int = 256) -> ChatRequest:
    return ChatRequest(faithful_messages(prompts, premise, hypothesis), max_tokens=max_tokens,
                       json_schema=FAITHFUL_SCHEMA)


def batched_request(prompts: EntailmentPrompts, premise: Sequence[str], hypotheses: Sequence[str],
                    max_tokens: int | None = None) -> ChatRequest:
    # About 25 tokens per compact verdict; leave room for evidence lists and spacing.
    budget = max_tokens if max_tokens is not None else 64 + 48 * len(hypotheses)
    return ChatRequest(batched_messages(prompts, premise, hypotheses), max_tokens=budget,
                       json_schema=BATCHED_SCHEMA)


# -- reading answers ---------------------------------------------------------

def _status(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    return _STATUS.get(str(value).strip().lower().replace("-", "_")) if value is not None else None


def _evidence(value: Any, premise: Sequence[str]) -> tuple[tuple[int, ...], bool]:
    """0-based indices and whether every item named a premise phrase (by number or by text)."""
    if value is None:
        return (), True
    items = value if isinstance(value, list) else [value]
    by_text = {normalise(p): i for i, p in enumerate(premise)}
    out, ok = [], True
    for item in items:
        idx: int | None = None
        if isinstance(item, bool):
            idx = None
        elif isinstance(item, int):
            idx = item - 1
        elif isinstance(item, str) and item.strip().isdigit():
            idx = int(item.strip()) - 1
        elif isinstance(item, str):
            idx = by_text.get(normalise(item))
        if idx is None or not 0 <= idx < len(premise):
            ok = False
        elif idx not in out:
            out.append(idx)
    return tuple(out), ok


def _verdict(obj: Any, premise: Sequence[str]) -> Verdict:
    if not isinstance(obj, dict):
        return FAILED
    entailed = _status(obj.get("status", obj.get("label")))
    if entailed is None:
        return FAILED
    evidence, ok = _evidence(obj.get("evidence"), premise)
    if not ok:
        return Verdict(entailed=False, evidence=evidence, evidence_mismatch=True)
    if entailed and not evidence:
        # The reference rejects an entailment without evidence as an invalid answer.
        return FAILED
    return Verdict(entailed=entailed, evidence=evidence)


def _json(resp: ChatResponse) -> Any:
    try:
        return resp.json()
    except LLMError:
        return None


def parse_faithful(resp: ChatResponse, premise: Sequence[str], hypothesis: str) -> Verdict:
    obj = _json(resp)
    v = _verdict(obj, premise)
    if v.failed or not isinstance(obj, dict):
        return v
    echoed = obj.get("phrase")
    if isinstance(echoed, str) and echoed.strip() != hypothesis.strip():
        log.debug("judge rewrote the hypothesis %r as %r", hypothesis, echoed)
        return Verdict(v.entailed, v.evidence, rewritten=True, evidence_mismatch=v.evidence_mismatch)
    return v


def parse_batched(resp: ChatResponse, premise: Sequence[str], n_hypotheses: int) -> list[Verdict]:
    obj = _json(resp)
    items = obj.get("verdicts") if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        return [FAILED] * n_hypotheses
    out: list[Verdict | None] = [None] * n_hypotheses
    for pos, item in enumerate(items):
        index = item.get("index") if isinstance(item, dict) else None
        # Verdicts carry their hypothesis number; one without a usable number is taken by position.
        slot = index - 1 if isinstance(index, int) and not isinstance(index, bool) and \
            1 <= index <= n_hypotheses else pos
        if 0 <= slot < n_hypotheses and out[slot] is None:
            out[slot] = _verdict(item, premise)
    return [v if v is not None else FAILED for v in out]
