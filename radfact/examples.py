"""Few-shot examples and instruction text: our own files, and the reference implementation's.

Our files live in radfact/prompts/:
    phrases_system.txt            instructions for report -> phrases
    phrases_examples.json         [{"report": str, "phrases": [str, ...]}, ...]
    entailment_system.txt         instructions, one hypothesis per call (faithful mode)
    entailment_batched_system.txt instructions, all hypotheses of one direction per call
    entailment_examples.json      [{"premise": [str], "hypotheses": [str],
                                    "verdicts": [{"status": "entailment"|"not_entailment",
                                                  "evidence": [1-based premise numbers]}]}]

To reproduce published numbers, the few-shot files of microsoft/RadFact can be loaded
instead (users supply the files; we ship none of their text):
    report-to-phrases: [{"example_id", "findings_text",
                         "parsed_report": {"sentence_list": [{"orig": str, "new": [str]}]}}]
      (an empty string in "new" means the sentence yields no phrase);
    entailment: [{"example_id", "input": {"phrases_A": [...], "phrases_B": [...]},
                  "output": {"phrases_A_evidenced": [{"phrase", "status", "evidence": [str]}],
                             "phrases_B_evidenced": [...]}}]
      with status entailment | contradiction | neutral (| not_entailment) and evidence given
      as phrase text. Each sample gives two one-way examples: A checked against B, and B
      against A; contradiction and neutral both become not_entailment.
`load_phrase_examples` and `load_entailment_examples` recognise either format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bench.errors import BenchError

ENTAILED = "entailment"
NOT_ENTAILED = "not_entailment"
# The reference's three-way NLI labels, and what each means for entailment verification.
_STATUS_TO_ENTAILED = {"entailment": True, "not_entailment": False, "contradiction": False, "neutral": False}


@dataclass(frozen=True)
class PhraseExample:
    report: str
    phrases: tuple[str, ...]


@dataclass(frozen=True)
class ExampleVerdict:
    entailed: bool
    evidence: tuple[int, ...]  # 0-based premise indices


@dataclass(frozen=True)
class EntailmentExample:
    """One direction: each hypothesis judged against the whole premise list."""

    premise: tuple[str, ...]
    hypotheses: tuple[str, ...]
    verdicts: tuple[ExampleVerdict, ...]

    def __post_init__(self) -> None:
        if len(self.hypotheses) != len(self.verdicts):
            raise BenchError(f"entailment example has {len(self.hypotheses)} hypotheses but "
                             f"{len(self.verdicts)} verdicts; give one verdict per hypothesis")
        for v in self.verdicts:
            if any(not 0 <= i < len(self.premise) for i in v.evidence):
                raise BenchError(f"entailment example evidence {[i + 1 for i in v.evidence]} points outside "
                                 f"its {len(self.premise)} premise phrases")


def normalise(text: str) -> str:
    """For matching phrases the judge quotes back: case, spacing and end punctuation do not count."""
    return re.sub(r"\s+", " ", text).strip().rstrip(".;:,!").strip().lower()


def builtin_text(name: str) -> str:
    return resources.files("radfact.prompts").joinpath(name).read_text(encoding="utf-8")


def _read_json_list(path: Path | None, builtin: str) -> tuple[list[Any], str]:
    if path is None:
        return json.loads(builtin_text(builtin)), f"radfact/prompts/{builtin}"
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"few-shot example file {path} does not exist; give a JSON file path")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BenchError(f"few-shot example file {path} is not valid JSON ({e})") from e
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise BenchError(f"few-shot example file {path} must hold a JSON list of objects")
    return data, str(path)


def load_phrase_examples(path: Path | str | None = None) -> list[PhraseExample]:
    """Our phrases_examples.json (path None), or a file in our or the reference's format."""
    data, where = _read_json_list(Path(path) if path else None, "phrases_examples.json")
    out = []
    for n, item in enumerate(data):
        if "report" in item and "phrases" in item:
            out.append(PhraseExample(str(item["report"]), tuple(str(p) for p in item["phrases"])))
        elif "findings_text" in item and isinstance(item.get("parsed_report"), dict):
            sentences = item["parsed_report"].get("sentence_list", [])
            phrases = tuple(p for s in sentences for p in s.get("new", []) if p.strip())
            out.append(PhraseExample(str(item["findings_text"]), phrases))
        else:
            raise BenchError(f"{where}: example {n} has keys {sorted(item)}; expected report+phrases "
                             "(ours) or findings_text+parsed_report (microsoft/RadFact)")
    return out


def _own_entailment(item: dict, where: str, n: int) -> EntailmentExample:
    verdicts = []
    for v in item["verdicts"]:
        status = str(v.get("status", ""))
        if status not in _STATUS_TO_ENTAILED:
            raise BenchError(f"{where}: example {n} has status {status!r}; use entailment or not_entailment")
        verdicts.append(ExampleVerdict(_STATUS_TO_ENTAILED[status], tuple(int(i) - 1 for i in v.get("evidence", []))))
    return EntailmentExample(tuple(item["premise"]), tuple(item["hypotheses"]), tuple(verdicts))


def _reference_one_way(evidenced: list[dict], premise: list[str], where: str, n: int) -> EntailmentExample:
    index = {normalise(p): i for i, p in enumerate(premise)}
    hyps, verdicts = [], []
    for e in evidenced:
        status = str(e.get("status", ""))
        if status not in _STATUS_TO_ENTAILED:
            raise BenchError(f"{where}: example {n} has status {status!r}; expected entailment, contradiction, "
                             "neutral or not_entailment")
        try:
            evidence = tuple(index[normalise(t)] for t in e.get("evidence", []))
        except KeyError as k:
            raise BenchError(f"{where}: example {n}: evidence {k.args[0]!r} is not one of the other side's "
                             "phrases") from None
        hyps.append(str(e["phrase"]))
        verdicts.append(ExampleVerdict(_STATUS_TO_ENTAILED[status], evidence))
    return EntailmentExample(tuple(premise), tuple(hyps), tuple(verdicts))


def load_entailment_examples(path: Path | str | None = None) -> list[EntailmentExample]:
    """Our entailment_examples.json (path None), or a file in our or the reference's format."""
    data, where = _read_json_list(Path(path) if path else None, "entailment_examples.json")
    out: list[EntailmentExample] = []
    for n, item in enumerate(data):
        if {"premise", "hypotheses", "verdicts"} <= set(item):
            out.append(_own_entailment(item, where, n))
        elif "input" in item and "output" in item:
            a, b = item["input"]["phrases_A"], item["input"]["phrases_B"]
            out.append(_reference_one_way(item["output"]["phrases_A_evidenced"], b, where, n))
            out.append(_reference_one_way(item["output"]["phrases_B_evidenced"], a, where, n))
        else:
            raise BenchError(f"{where}: example {n} has keys {sorted(item)}; expected premise+hypotheses+verdicts "
                             "(ours) or input+output (microsoft/RadFact)")
    return out
