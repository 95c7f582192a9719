"""The blinded sentence rows: what a reader sees and answers, one row per sentence.

A row is named by the reader's case number, the report's letter and the sentence number
("03-B-2": case 3, report B, sentence 2); a report with no findings is one row with sentence
number 0 that takes no answer. Rows never name a system or a run: that is the key's job.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.errors import DataError


@dataclass(frozen=True)
class Item:
    reader: str
    row: str  # "03-B-2"
    case: int  # 1-based, in this reader's order
    sample_id: str
    study_id: str
    image: str  # file name under images/
    indication: str
    letter: str
    sentence: int  # 1-based; 0 for an empty report
    text: str

    @property
    def empty(self) -> bool:
        return self.sentence == 0

    @property
    def sentence_key(self) -> tuple[str, str, int]:
        """The same sentence for every reader who reads it: (sample, letter, number)."""
        return self.sample_id, self.letter, self.sentence


def row_name(case: int, letter: str, sentence: int) -> str:
    return f"{case:02d}-{letter}-{sentence}"


def write_items(path: Path, items: list[Item]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(i), ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    tmp.replace(path)


def read_items(path: Path) -> list[Item]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(Item(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise DataError(f"{path}:{n}: not a sentence row of this version ({exc}); export the study again") from None
    return out


def by_reader(items: list[Item]) -> dict[str, list[Item]]:
    out: dict[str, list[Item]] = {}
    for i in items:
        out.setdefault(i.reader, []).append(i)
    return out
