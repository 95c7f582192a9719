"""Table-1-shaped leaderboards from run directories (each with an aggregate.json).

Columns follow the paper's Table 1; values are percentages with the bootstrap 95%
interval beside them. A metric that could not run shows "n/a" and a footnote with the
reason, so a missing number can never be mistaken for a low one.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

# (aggregate key, header). The rule-based labeller gets its own, clearly named columns.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("radfact_f1", "RadFact F1"), ("bleu4", "BL4"), ("rougeL", "RG-L"), ("meteor", "MTR"),
    ("rger", "RGER"), ("chexbert_ma5", "Ma-5"), ("chexbert_ma14", "Ma-14"),
    ("chexbert_mi5", "Mi-5"), ("chexbert_mi14", "Mi-14"),
    ("rules_ma5", "Ma-5 (rules)"), ("rules_ma14", "Ma-14 (rules)"),
    ("rules_mi5", "Mi-5 (rules)"), ("rules_mi14", "Mi-14 (rules)"),
)


@dataclass
class Cell:
    value: float | None = None
    low: float | None = None
    high: float | None = None
    unavailable: str | None = None  # reason

    def text(self, intervals: bool = True) -> str:
        if self.unavailable is not None:
            return "n/a"
        if self.value is None:
            return ""
        s = f"{100 * self.value:.1f}"
        if intervals and self.low is not None and self.high is not None:
            s += f" [{100 * self.low:.1f}, {100 * self.high:.1f}]"
        return s


@dataclass
class Board:
    headers: list[str]
    rows: list[tuple[str, list[Cell]]]  # (system label, cells)
    notes: list[str]  # footnotes: unavailable metrics and their reasons
    caption: str


def load_board(runs_dir: Path) -> Board:
    paths = sorted(Path(runs_dir).rglob("aggregate.json"))
    if not paths:
        raise BenchError(f"no runs under {runs_dir} (looked for */aggregate.json); run `bench run` first")
    aggs = [json.loads(p.read_text()) for p in paths]
    present: set[str] = set()
    plugin: set[str] = set()
    known = {k for k, _ in COLUMNS}
    notes: dict[str, str] = {}
    for a in aggs:
        for name, m in a["metrics"].items():
            cols_m = set(m.get("columns", []))
            present |= cols_m
            if not cols_m & known:
                plugin |= cols_m  # a metric the table does not know: show all its columns
            if m["status"] == "unavailable":
                notes[name] = f"{name}: {m['reason']}" + (f" Remedy: {m['remedy']}" if m.get("remedy") else "")
    # Known metrics show their Table-1 columns only; their other values (RadFact's failure
    # counts, BLEU-1..3) stay in aggregate.json, where they are not mistaken for percentages.
    cols = [(k, h) for k, h in COLUMNS if k in present]
    cols += [(k, k) for k in sorted(plugin)]
    rows = []
    for a in aggs:
        cells = []
        for key, _ in cols:
            cell = Cell()
            for name, m in a["metrics"].items():
                if key not in m.get("columns", []):
                    continue
                if m["status"] == "unavailable":
                    cell = Cell(unavailable=m["reason"])
                elif key in m["values"]:
                    v = m["values"][key]
                    cell = Cell(v["value"], v.get("low"), v.get("high"))
            cells.append(cell)
        rows.append((a["system"], cells))
    first = aggs[0]
    caption = f"{first['dataset']} {first['split']} split, {first['n']} {first.get('unit', 'image')}s; " \
              "values x100, bootstrap 95% interval in brackets"
    if len({(a["dataset"], a["split"], a["n"]) for a in aggs}) > 1:
        caption += " (WARNING: runs differ in dataset, split or size: not comparable)"
    return Board([h for _, h in cols], rows, sorted(notes.values()), caption)


def render(board: Board, fmt: str = "md", intervals: bool = True) -> str:
    if fmt == "md":
        lines = [f"_{board.caption}_", "", "| system | " + " | ".join(board.headers) + " |",
                 "|---|" + "---|" * len(board.headers)]
        lines += ["| " + name + " | " + " | ".join(c.text(intervals) for c in cells) + " |"
                  for name, cells in board.rows]
        lines += [""] + [f"- n/a {n}" for n in board.notes]
        return "\n".join(lines).rstrip() + "\n"
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        head = ["system"]
        for h in board.headers:
            head += [h, f"{h} low", f"{h} high"]
        w.writerow(head)
        for name, cells in board.rows:
            row = [name]
            for c in cells:
                if c.unavailable is not None:
                    row += ["n/a", "", ""]
                else:
                    row += [_pct(c.value), _pct(c.low), _pct(c.high)]
            w.writerow(row)
        return buf.getvalue()
    if fmt == "html":
        e = html.escape
        out = [f"<table>\n<caption>{e(board.caption)}</caption>",
               "<tr><th>system</th>" + "".join(f"<th>{e(h)}</th>" for h in board.headers) + "</tr>"]
        for name, cells in board.rows:
            out.append(f"<tr><td>{e(name)}</td>" + "".join(_html_cell(c, intervals) for c in cells) + "</tr>")
        out.append("</table>")
        out += [f"<p>n/a {e(n)}</p>" for n in board.notes]
        return "\n".join(out) + "\n"
    raise BenchError(f"unknown format {fmt!r}; choose one of: md, csv, html")


def _html_cell(c: Cell, intervals: bool) -> str:
    title = f' title="{html.escape(c.unavailable)}"' if c.unavailable is not None else ""
    return f"<td{title}>{html.escape(c.text(intervals))}</td>"


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}"
