"""Reader workbooks (XLSX, openpyxl): written for each reader, read back when returned.

Sheet "Sentences": one row per sentence, header frozen, the study's thumbnail embedded in
the first row of each case with a link to the full-resolution PNG, the indication, the
blinded report letter and sentence, and answer cells with drop-downs (data validation):
action, one column per error category (mark "x"; several allowed), clinical impact, and a
free-text edited sentence. Sheet "About" names the reader and the export, so a returned
file is matched to its reader whatever it is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openpyxl import Workbook, load_workbook
from openpyxl.drawing.image import Image as XLImage
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from bench.errors import DataError
from readerstudy.images import thumbnail_png
from readerstudy.items import Item
from readerstudy.schema import ACTIONS, CATEGORIES, EMPTY_REPORT, IMPACTS, Answer

SHEET, ABOUT = "Sentences", "About"
MARK = "x"
INFO = ["row", "case", "image", "indication", "report", "#", "sentence"]
ANSWER = ["action", *CATEGORIES, "impact", "edited sentence"]
HEADER = INFO + ANSWER
WIDTHS = {"row": 10, "case": 6, "image": 24, "indication": 30, "report": 7, "#": 4, "sentence": 60,
          "action": 9, "impact": 11, "edited sentence": 50}
THUMB_ROW_PT = 125  # row height (points) that shows a 160 px thumbnail


def col(name: str) -> str:
    return get_column_letter(HEADER.index(name) + 1)


def write_workbook(path: Path, reader: str, export_id: str, items: list[Item], images_dir: Path,
                   instructions: list[str]) -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = SHEET
    ws.append(HEADER)
    for c in ws[1]:
        c.font = Font(bold=True)
        c.fill = PatternFill("solid", fgColor="DDDDDD")
    ws.freeze_panes = "A2"
    for name in HEADER:
        ws.column_dimensions[col(name)].width = WIDTHS.get(name, 13)
    seen_cases: set[int] = set()
    for r, it in enumerate(items, start=2):
        ws.append([it.row, it.case, "", it.indication, it.letter, it.sentence or "",
                   EMPTY_REPORT if it.empty else it.text] + [""] * len(ANSWER))
        for name in ("indication", "sentence", "edited sentence"):
            ws[f"{col(name)}{r}"].alignment = Alignment(wrap_text=True, vertical="top")
        if it.case not in seen_cases:  # the image once per case, in its first row
            seen_cases.add(it.case)
            cell = ws[f"{col('image')}{r}"]
            cell.value = "full image"
            cell.hyperlink = f"../images/{it.image}"
            cell.font = Font(color="0563C1", underline="single")
            pic = XLImage(thumbnail_png(images_dir / it.image))
            ws.add_image(pic, f"{col('image')}{r}")
            ws.row_dimensions[r].height = THUMB_ROW_PT
    last = len(items) + 1
    _validation(ws, f'"{",".join(ACTIONS)}"', [col("action")], last, "action", ", ".join(ACTIONS))
    _validation(ws, f'"{MARK}"', [col(c) for c in CATEGORIES], last, "error category", f'"{MARK}" or blank')
    _validation(ws, f'"{",".join(IMPACTS)}"', [col("impact")], last, "clinical impact", ", ".join(IMPACTS))
    about = wb.create_sheet(ABOUT)
    about.append(["reader", reader])
    about.append(["export", export_id])
    about.append([])
    for line in instructions:
        about.append([line])
    about.column_dimensions["A"].width = 110
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.xlsx")
    wb.save(tmp)
    tmp.replace(path)


def _validation(ws, formula: str, cols: list[str], last: int, what: str, allowed: str) -> None:
    dv = DataValidation(type="list", formula1=formula, allow_blank=True, showDropDown=False,
                        showErrorMessage=True, errorTitle=f"Not a valid {what}", error=f"Choose one of: {allowed}")
    for c in cols:
        dv.add(f"{c}2:{c}{last}")
    ws.add_data_validation(dv)


@dataclass
class ReturnedRow:
    sheet_row: int  # the row number a spreadsheet shows
    row: str
    text: str
    answer: Answer
    raw: dict[str, str]  # cell text by column, for messages


@dataclass
class Returned:
    path: Path
    reader: str
    export_id: str
    rows: list[ReturnedRow]
    simulated: bool = False  # written by readerstudy.simulate, not by a reader


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def read_workbook(path: Path) -> Returned:
    """A returned workbook as it is: values are checked by the import, not here."""
    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several kinds for a file that is not a workbook
        raise DataError(f"{path.name}: not a readable XLSX workbook ({type(exc).__name__}: {exc})") from None
    try:
        if SHEET not in wb.sheetnames or ABOUT not in wb.sheetnames:
            raise DataError(f"{path.name}: not a reader-study workbook (sheets {SHEET!r} and {ABOUT!r} expected, "
                            f"found {wb.sheetnames})")
        about = {(_text(r[0]) if r else ""): (_text(r[1]) if len(r) > 1 else "")
                 for r in wb[ABOUT].iter_rows(values_only=True)}
        rows_iter = wb[SHEET].iter_rows(values_only=True)
        header = [_text(v) for v in next(rows_iter, [])]
        if header[:len(HEADER)] != HEADER:
            missing = [h for h in HEADER if h not in header]
            raise DataError(f"{path.name}, sheet {SHEET}, row 1: the header was changed "
                            f"({'missing ' + ', '.join(missing) if missing else 'columns moved'}); "
                            "answer in the workbook as sent, without moving columns")
        rows = []
        for n, values in enumerate(rows_iter, start=2):
            raw = {h: _text(v) for h, v in zip(HEADER, values)}
            if not any(raw.values()):
                continue
            cats = [c for c in CATEGORIES if raw.get(c)]
            answer = Answer(raw.get("action", "").lower(), cats, raw.get("impact", "").lower(),
                            raw.get("edited sentence", ""))
            rows.append(ReturnedRow(n, raw.get("row", ""), raw.get("sentence", ""), answer, raw))
    finally:
        wb.close()
    return Returned(path, about.get("reader", ""), about.get("export", ""), rows, "simulated" in about)
