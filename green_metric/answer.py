"""Reading a GREEN judge's answer: error counts per category, matched findings, the score.

The answer format GREEN's prompt asks for (and its judge was trained to write) has three
sections, each a bracketed heading followed by its lines up to a blank line:

    [Clinically Significant Errors]:
    (a) <error type>: <count>. <error 1>; <error 2>; ...
    ...
    (f) <error type>: <count>. ...

    [Clinically Insignificant Errors]:
    (a) ... (f), as above

    [Matched Findings]:
    <count>. <finding 1>; <finding 2>; ...

A section may instead begin with the word "No" or "None" ("No errors.", "No matched
findings."): zero counts.
The six error categories are (a) a false report of a finding, (b) a missing finding,
(c) a finding's anatomic location or position misidentified, (d) its severity misassessed,
(e) a comparison mentioned that the reference does not have, (f) a comparison with a prior
study omitted. GREEN numbers them (a)-(f); answers numbered (1)-(6) (GPT-4's template) are
read the same way.

    GREEN = matched / (matched + sum of the six clinically significant error counts)

and 0 when nothing matched, as GREEN's own code defines it (insignificant errors do not
enter the score).

Where GREEN's code reads an answer that lacks a section, or whose counts cannot be found, as
zero (and so scores it 0), we raise `GreenFormatError`: the study is failed, never scored.
Within a section that is there, a category line without a count reads as 0, as in GREEN's
code, and a category the judge left out has no errors. GREEN's code takes any section that
begins with the letters "No" for an empty one, "Normal heart size" included; we require the
word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.errors import BenchError

SIGNIFICANT = "Clinically Significant Errors"
INSIGNIFICANT = "Clinically Insignificant Errors"
MATCHED = "Matched Findings"
SECTIONS = (SIGNIFICANT, INSIGNIFICANT, MATCHED)
CATEGORIES = ("a", "b", "c", "d", "e", "f")
CATEGORY_NAMES = {
    "a": "false report of a finding",
    "b": "missing a finding present in the reference",
    "c": "misidentified anatomic location or position",
    "d": "misassessed severity",
    "e": "a comparison the reference does not have",
    "f": "an omitted comparison with a prior study",
}
_DIGIT_TO_LETTER = dict(zip("123456", CATEGORIES))
# A category line: "(a) anything", the marker at the start of a line (after spaces or a bullet).
_CATEGORY_LINE = re.compile(r"^[ \t*\-]*\(([a-f1-6])\)\s+(.*)$", re.MULTILINE)
# Its count: the first integer after ": " that ends with a full stop, as GREEN's format writes it.
_COUNT = re.compile(r"(?<=: )(\d+)(?=\.)")
_MATCHED_COUNT = re.compile(r"^(\d+)(?=\.)")


class GreenFormatError(BenchError):
    """An answer that is not in GREEN's format: the study is failed, never scored."""


@dataclass(frozen=True)
class GreenAnswer:
    significant: tuple[int, ...]  # counts of categories (a)-(f)
    insignificant: tuple[int, ...]
    matched: int

    @property
    def score(self) -> float:
        if self.matched == 0:
            return 0.0
        return self.matched / (self.matched + sum(self.significant))


def _section(text: str, name: str) -> str | None:
    """The body of `[name]:` up to the next blank line (or the end); None when absent."""
    m = re.search(rf"\[{re.escape(name)}\]:[ \t]*\n?(.*?)(?:\n[ \t]*\n|\Z)", text, re.DOTALL)
    return None if m is None else m.group(1).strip()


def _says_none(body: str) -> bool:
    # "No errors.", "None.", "No matched findings": the word, not a prefix ("Normal heart size"
    # begins with "No" too, and GREEN's own code reads it as nothing).
    return re.match(r"(?:No|None)\b", body) is not None


def _errors(body: str, name: str) -> tuple[int, ...]:
    if _says_none(body):
        return (0,) * len(CATEGORIES)
    counts: dict[str, int] = {}
    for marker, rest in _CATEGORY_LINE.findall(body):
        letter = _DIGIT_TO_LETTER.get(marker, marker)
        if letter in counts:
            raise GreenFormatError(f"[{name}] lists category ({letter}) twice")
        m = _COUNT.search(rest)
        counts[letter] = int(m.group(1)) if m else 0
    if not counts:
        raise GreenFormatError(f"[{name}] has neither category lines (a)-(f) nor 'No ...': {body[:80]!r}")
    return tuple(counts.get(c, 0) for c in CATEGORIES)


def _matched(body: str) -> int:
    if _says_none(body):
        return 0
    m = _MATCHED_COUNT.match(body)
    if m is None:
        raise GreenFormatError(f"[{MATCHED}] does not begin with '<count>.' or 'No': {body[:80]!r}")
    return int(m.group(1))


def parse_answer(text: str) -> GreenAnswer:
    """The counts in a GREEN answer; GreenFormatError when it is not in GREEN's format."""
    bodies = {name: _section(text, name) for name in SECTIONS}
    missing = [n for n, b in bodies.items() if b is None]
    if missing:
        raise GreenFormatError("the answer lacks " + ", ".join(f"[{n}]" for n in missing))
    return GreenAnswer(significant=_errors(bodies[SIGNIFICANT] or "", SIGNIFICANT),
                       insignificant=_errors(bodies[INSIGNIFICANT] or "", INSIGNIFICANT),
                       matched=_matched(bodies[MATCHED] or ""))
