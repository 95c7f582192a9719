"""`bench reader-study import`, first half: read every returned answer, check it, unblind it.

Answers come from returned workbooks (any file under returned/, matched to its reader by the
workbook's About sheet) and from the reading page's store. Every problem is named by file,
sheet, row and field; problems stop the import (a wrong answer is never counted), and all
of them are written to results/problems.txt so that they can be fixed in one pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from readerstudy.items import Item, by_reader, read_items
from readerstudy.layout import StudyDir
from readerstudy.schema import CATEGORIES, Answer, problems
from readerstudy.store import AnswerStore
from readerstudy.workbook import MARK, SHEET, read_workbook

log = logging.getLogger(__name__)

VERDICT_COLUMNS = ["reader", "source", "row", "case", "sample_id", "study_id", "letter", "sentence", "text",
                   "empty", "run", "action", "categories", "impact", "edit"]


class AnswerProblems(BenchError):
    """Returned answers that break the rules; the message names the first ones."""

    def __init__(self, found: list[str], listing: Path | None):
        self.found = found
        shown = "; ".join(found[:3])
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        where = f"; all {len(found)} listed in {listing}" if listing else ""
        super().__init__(f"{len(found)} problem(s) in the returned answers: {shown}{more}{where}")


@dataclass
class Collected:
    verdicts: pd.DataFrame  # one row per answered sentence row (empty reports included, unanswered)
    sources: dict[str, str]  # reader -> where their answers came from
    left_out: list[str]  # with partial=True: what was not analysed, and why


def collect(study: StudyDir, partial: bool = False) -> Collected:
    study.check()
    manifest = json.loads(study.manifest.read_text())
    if not study.key.exists():
        raise BenchError(f"the unblinding key {study.key} is missing; without it answers cannot be given to systems "
                         "(restore it from the export)")
    key = json.loads(study.key.read_text())
    for rel in ("items.jsonl", "key/unblinding-key.json"):
        want = manifest.get("files", {}).get(rel)
        if want and hashlib.sha256((study.root / rel).read_bytes()).hexdigest() != want:
            raise BenchError(f"{study.root / rel} changed since the export (its sha256 is not the manifest's); "
                             "restore it from the export: answers are matched to rows and systems through it")
    items = by_reader(read_items(study.items))
    readers = list(json.loads(study.readers.read_text())["readers"])
    found: list[str] = []
    answers: dict[str, dict[str, Answer]] = {}
    sources: dict[str, str] = {}

    workbooks = sorted(p for p in study.returned.rglob("*.xlsx") if not p.name.startswith("~$")) \
        if study.returned.exists() else []
    for path in workbooks:
        wb = read_workbook(path)
        name = path.relative_to(study.root).as_posix()
        if wb.export_id != manifest["export"]:
            found.append(f"{name}, sheet About: made for export {wb.export_id or '(none)'}, not this study's "
                         f"{manifest['export']}")
            continue
        if wb.reader not in readers:
            found.append(f"{name}, sheet About: unknown reader {wb.reader!r} (readers: {', '.join(readers)})")
            continue
        if wb.reader in sources:
            found.append(f"{name}: the workbook of {wb.reader} is returned twice ({sources[wb.reader]} and {name}); "
                         "keep one of them in returned/")
            continue
        sources[wb.reader] = name + (" (simulated)" if wb.simulated else "")
        answers[wb.reader] = _check_workbook(name, wb, items.get(wb.reader, []), found)

    web = AnswerStore(study.store).answers()
    web_by_reader: dict[str, dict[str, Answer]] = {}
    for (reader, row), a in web.items():
        web_by_reader.setdefault(reader, {})[row] = a
    for reader, rows in web_by_reader.items():
        rows = {r: a for r, a in rows.items() if not a.is_blank()}
        if not rows:
            continue
        if reader not in readers:
            found.append(f"{study.store.name}: answers of unknown reader {reader!r}")
            continue
        if reader in sources:
            found.append(f"{reader} answered both in {sources[reader]} and on the reading page ({study.store.name}); "
                         "remove the workbook from returned/ or use only the page")
            continue
        sources[reader] = "reading page"
        known = {it.row: it for it in items.get(reader, [])}
        for row, a in rows.items():
            if row not in known:
                found.append(f"{study.store.name}, reader {reader}, row {row}: not a row of this reader")
                continue
            for fld, msg in problems(a, known[row].empty):
                found.append(f"{study.store.name}, reader {reader}, row {row}, field {fld}: {msg}")
        answers[reader] = rows

    left_out: list[str] = []
    for reader in readers:
        if reader not in sources and items.get(reader):  # a reader dealt no study has nothing to return
            msg = f"{reader} has returned nothing (no workbook in returned/, no answers on the reading page)"
            (left_out if partial else found).append(msg)
    unanswered = [(r, it) for r in sources for it in items.get(r, []) if not it.empty and it.row not in answers[r]]
    if unanswered and not partial:
        for r, it in unanswered[:50]:
            where = sources[r] if sources[r] == "reading page" else f"{sources[r]}, sheet {SHEET}"
            found.append(f"{where}, reader {r}, row {it.row}, field action: no answer")
        if len(unanswered) > 50:
            found.append(f"... {len(unanswered) - 50} more rows without an answer")
    if found:
        study.results.mkdir(exist_ok=True)
        listing = study.results / "problems.txt"
        listing.write_text("\n".join(found) + "\n")
        raise AnswerProblems(found, listing)

    incomplete = {(r, it.sample_id, it.letter) for r, it in unanswered}
    if incomplete:
        left_out.append(f"{len(incomplete)} report readings not finished (left out whole)")
    records = []
    for reader in sources:
        for it in items.get(reader, []):
            if (reader, it.sample_id, it.letter) in incomplete:
                continue
            a = answers[reader].get(it.row, Answer())
            run = key["studies"][it.sample_id]["reports"][it.letter]
            records.append([reader, sources[reader], it.row, it.case, it.sample_id, it.study_id, it.letter,
                            it.sentence, it.text, it.empty, run, a.action,
                            ";".join(c for c in CATEGORIES if c in a.categories), a.impact, a.edit])
    return Collected(pd.DataFrame(records, columns=VERDICT_COLUMNS), sources, left_out)


def _check_workbook(name: str, wb, items: list[Item], found: list[str]) -> dict[str, Answer]:
    expected = {it.row: it for it in items}
    got: dict[str, Answer] = {}
    for r in wb.rows:
        where = f"{name}, sheet {SHEET}, row {r.sheet_row}"
        it = expected.get(r.row)
        if it is None:
            found.append(f"{where}, field row: unknown row {r.row!r}; rows must stay as sent")
            continue
        if r.row in got:
            found.append(f"{where}, field row: row {r.row} appears twice")
            continue
        where += f" ({r.row})"
        sent = "" if it.empty else it.text
        if not it.empty and r.text != sent:
            found.append(f"{where}, field sentence: the sentence was changed; put corrections under 'edited sentence'")
        for c in CATEGORIES:
            v = r.raw.get(c, "")
            if v and v.lower() != MARK:
                found.append(f"{where}, field {c}: unknown value {v!r}; mark with {MARK!r} or leave blank")
        for fld, msg in problems(r.answer, it.empty):
            found.append(f"{where}, field {fld}: {msg}")
        if not r.answer.is_blank():
            got[r.row] = r.answer
    present = {r.row for r in wb.rows}
    for row in expected:
        if row not in present:
            found.append(f"{name}, sheet {SHEET}, field row: row {row} is missing; rows must stay as sent")
    return got
