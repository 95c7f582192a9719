"""What a reader answers for one sentence, and the rules an answer must follow.

The vocabulary is the paper's (Appendix E, after MAIRA-2): an action per sentence; for a
changed sentence (edited or deleted) one or more error categories and a clinical impact; for
an edited one, the corrected sentence. The same rules check a workbook row, a web answer and
the import, so both ways of reading give the same results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIONS = ("keep", "edit", "delete")
CHANGED = ("edit", "delete")
CATEGORIES = ("omission", "misclassification", "overspecific", "incorrect location", "other")
IMPACTS = ("significant", "minor", "none")
# Impact as an ordered scale for Krippendorff's alpha: a kept sentence has no clinical impact,
# like a change whose impact is "none".
IMPACT_LEVEL = {"none": 0, "minor": 1, "significant": 2}
EMPTY_REPORT = "(empty report: no findings were written)"


@dataclass
class Answer:
    """One reader's verdict on one sentence row, as stored and as read from a workbook."""

    action: str = ""
    categories: list[str] = field(default_factory=list)
    impact: str = ""
    edit: str = ""

    def is_blank(self) -> bool:
        return not (self.action or self.categories or self.impact or self.edit.strip())

    def to_json(self) -> dict:
        return {"action": self.action, "categories": list(self.categories), "impact": self.impact, "edit": self.edit}

    @classmethod
    def from_json(cls, d: dict) -> "Answer":
        return cls(str(d.get("action") or ""), [str(c) for c in d.get("categories") or []],
                   str(d.get("impact") or ""), str(d.get("edit") or ""))


def unknown_values(answer: Answer) -> list[tuple[str, str]]:
    """(field, what is wrong) for every value outside the vocabulary: never stored, never counted."""
    out: list[tuple[str, str]] = []
    if answer.action and answer.action not in ACTIONS:
        out.append(("action", f"unknown value {answer.action!r}; expected one of {', '.join(ACTIONS)}"))
    for c in answer.categories:
        if c not in CATEGORIES:
            out.append(("categories", f"unknown error category {c!r}; expected some of {', '.join(CATEGORIES)}"))
    if len(set(answer.categories)) != len(answer.categories):
        out.append(("categories", "an error category is given twice"))
    if answer.impact and answer.impact not in IMPACTS:
        out.append(("impact", f"unknown value {answer.impact!r}; expected one of {', '.join(IMPACTS)}"))
    return out


def problems(answer: Answer, empty_report: bool = False) -> list[tuple[str, str]]:
    """(field, what is wrong) for every rule the answer breaks; [] for a complete, valid answer."""
    out: list[tuple[str, str]] = []
    if empty_report:
        if not answer.is_blank():
            out.append(("action", "this row stands for an empty report: there is no sentence to judge, "
                                  "leave it blank"))
        return out
    if not answer.action:
        out.append(("action", "no action; choose keep, edit or delete"))
    out.extend(unknown_values(answer))
    if answer.action == "keep":
        if answer.categories:
            out.append(("categories", "error categories on a kept sentence; a kept sentence has no error"))
        if answer.impact:
            out.append(("impact", "an impact on a kept sentence; a kept sentence has no error"))
        if answer.edit.strip():
            out.append(("edit", "an edited sentence on a kept sentence; choose edit, or clear the text"))
    elif answer.action in CHANGED:
        if not answer.categories:
            out.append(("categories", f"an {answer.action} without an error category; mark at least one"
                        if answer.action == "edit" else "a delete without an error category; mark at least one"))
        if not answer.impact:
            out.append(("impact", f"no clinical impact for a changed sentence; choose one of {', '.join(IMPACTS)}"))
        if answer.action == "edit" and not answer.edit.strip():
            out.append(("edit", "an edit without the edited sentence; write the corrected sentence"))
        if answer.action == "delete" and answer.edit.strip():
            out.append(("edit", "an edited sentence on a deleted sentence; choose edit, or clear the text"))
    return out
