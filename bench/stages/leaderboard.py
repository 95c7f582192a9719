"""Leaderboards from run directories (each with an aggregate.json).

Columns come from each metric's own metadata (its table columns and their display names),
in the order the runs list their metrics; nothing here knows a particular metric. Values
are percentages with the bootstrap 95% interval beside them. A metric that could not run
shows "n/a" and a footnote with the reason, so a missing number can never be mistaken for a
low one; a value with failed judgements or samples says how many, and is flagged above 5%.

Runs share a table only when they were scored on the same data: the same dataset
fingerprint, split and unit. Other runs get a table of their own, and the output says why.
Within a table, every metric's values must carry one signature (bench.signatures): values
computed differently are refused, naming the setting, unless `allow_mixed` shows them marked
"≠". Every output format lists the signatures.

Published results (bench/published_results.json) are shown only when asked: under a table of
runs on the same data (dataset, split, reference sections) as extra rows marked "†" and
"(published)", with their sources in the notes; tables of other data get them as a separate,
captioned table. They are kept apart from the measured rows (`Board.published`), so nothing
that computes on a board's runs can reach them.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.signatures import differences

FLAG = "⚠"
MIXED = "≠"
PUBLISHED = "†"


@dataclass
class Cell:
    value: float | None = None
    low: float | None = None
    high: float | None = None
    unavailable: str | None = None  # reason
    failed: str | None = None  # "12/850 failed"
    flagged: bool = False
    mixed: bool = False  # computed differently from the column's first value (allow_mixed)

    def text(self, intervals: bool = True) -> str:
        if self.unavailable is not None:
            return "n/a"
        if self.value is None:
            return ""
        s = f"{100 * self.value:.1f}"
        if intervals and self.low is not None and self.high is not None:
            s += f" [{100 * self.low:.1f}, {100 * self.high:.1f}]"
        if self.failed:
            s += f" ({self.failed})"
        if self.mixed:
            s = f"{MIXED} {s}"
        return f"{FLAG} {s}" if self.flagged else s


@dataclass
class Board:
    headers: list[str]
    rows: list[tuple[str, list[Cell]]]  # (run label, cells)
    notes: list[str]  # footnotes: unavailable metrics and their reasons, failures
    caption: str
    group: dict[str, Any]  # dataset name, fingerprint, split, unit
    signatures: dict[str, list[str]] = field(default_factory=dict)  # metric -> signature texts in use
    row_signatures: dict[str, list[str]] = field(default_factory=dict)  # row label -> its metrics' signatures
    keys: list[str] = field(default_factory=list)  # column keys, aligned with headers
    # Quoted rows (label, cells, source), shown after the measured rows; never part of `rows`.
    published: list[tuple[str, list[Cell], str]] = field(default_factory=list)
    # Second tables of the same runs: a metric's detail columns (per-finding F1, ...), shown after this one.
    details: list["Board"] = field(default_factory=list)


def load_runs(runs_dir: Path) -> list[dict[str, Any]]:
    paths = sorted(Path(runs_dir).rglob("aggregate.json"))
    if not paths:
        raise BenchError(f"no runs under {runs_dir} (looked for */aggregate.json); run `bench run` or "
                         "`bench score` first")
    runs = []
    for p in paths:
        try:
            agg = json.loads(p.read_text())
        except json.JSONDecodeError:
            raise BenchError(f"{p} is not valid JSON; score that run again (`bench score --run {p.parent}`)") from None
        if not isinstance(agg.get("dataset"), dict) or "metrics" not in agg:
            raise BenchError(f"{p} was written by an older version of the harness; score that run again "
                             f"(`bench score --run {p.parent}`)")
        runs.append(agg)
    return runs


def group_key(agg: dict[str, Any]) -> tuple[str, str, str]:
    d = agg["dataset"]
    return (d.get("fingerprint", ""), d.get("split", ""), d.get("unit", ""))


def load_boards(runs_dir: Path, allow_mixed: bool = False, published: bool = False) -> list[Board]:
    """One board per group of comparable runs, largest group first; with `published`, the quoted
    rows of bench/published_results.json beside the runs made on their data, and a board of
    their own for each published table that no group matches."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for agg in load_runs(runs_dir):
        groups.setdefault(group_key(agg), []).append(agg)
    ordered = sorted(groups.values(), key=lambda g: -len(g))
    boards = [_board(g, allow_mixed) for g in ordered]
    for board, group in zip(boards, ordered):
        board.details = _detail_boards(group, allow_mixed)
    if published:
        boards += add_published(boards)
    return boards


def add_published(boards: list[Board]) -> list[Board]:
    """Attach each published table's rows to the boards of its data; returns boards of their own
    for the tables that matched none."""
    from bench.published import load_tables

    alone = []
    for table in load_tables():
        matched = [b for b in boards if table.matches(b.group)]
        for b in matched:
            b.published += [_published_row(r, b.keys) for r in table.rows]
            b.notes.append(_published_note(table))
        if not matched:
            keys = list(dict.fromkeys(k for r in table.rows for k in r.values))
            headers = _published_headers(table, keys)
            caption = (f"{PUBLISHED} published: {table.title} ({table.describe_data()}); quoted, not measured here, "
                       "and not comparable with tables of other data")
            alone.append(Board(headers, [], [_published_note(table)], caption, dict(table.dataset), keys=keys,
                               published=[_published_row(r, keys) for r in table.rows]))
    return alone


def _published_row(row: Any, keys: list[str]) -> tuple[str, list[Cell], str]:
    cells = [Cell(row.values[k] / 100) if k in row.values else Cell() for k in keys]
    return f"{PUBLISHED} {row.system} (published)", cells, row.source


def _published_headers(table: Any, keys: list[str]) -> list[str]:
    from bench.published import read_document

    for t in read_document().get("tables", []):
        if t["id"] == table.id:
            by_key = {v: k for k, v in t["columns"].items()}
            return [by_key.get(k, k) for k in keys]
    return keys


def _published_note(table: Any) -> str:
    sources = "; ".join(f"{r.system}: {r.source}" for r in table.rows)
    return (f"{PUBLISHED} published rows: {table.title} ({table.describe_data()}). Source: {table.source}. "
            f"{table.notes} Quoted as printed, with the authors' own metric implementations (signatures unknown), "
            f"no intervals; never used in any statistic or test. Rows: {sources}")


def load_board(runs_dir: Path, allow_mixed: bool = False) -> Board:
    """The board of a directory whose runs are all comparable; an error naming the groups otherwise."""
    boards = load_boards(runs_dir, allow_mixed)
    if len(boards) > 1:
        raise BenchError(f"the runs under {runs_dir} were scored on different data: "
                         + "; ".join(b.caption for b in boards))
    return boards[0]


def _columns(aggs: list[dict[str, Any]], detail: bool = False) -> list[tuple[str, str, str]]:
    """(metric, column key, header) in the order the runs list them; with `detail`, the columns of
    the metrics' detail tables (metadata "details") instead of their leaderboard columns."""
    cols: list[tuple[str, str, str]] = []
    for agg in aggs:
        for name, m in agg["metrics"].items():
            meta = m.get("metadata", {})
            for c in (meta.get("details") or {}).get("columns", []) if detail else meta.get("columns", []):
                item = (name, c["key"], c["header"])
                if item not in cols:
                    cols.append(item)
    return cols


def _reference_signatures(aggs: list[dict[str, Any]], allow_mixed: bool) -> dict[str, list[dict[str, Any]]]:
    """Per metric, the distinct signatures its values carry (the first run's first); an error
    naming the differing settings when there are several and mixing is not allowed."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for agg in aggs:
        for name, m in agg["metrics"].items():
            sig = m.get("signature", {}).get("settings")
            if m["status"] != "ok" or sig is None:
                continue
            known = seen.setdefault(name, [])
            if sig not in known:
                if known and not allow_mixed:
                    raise BenchError(f"{name} values were computed differently in {aggs[0]['run']!r} and "
                                     f"{agg['run']!r} ({'; '.join(differences(known[0], sig))}); they cannot share "
                                     "a table. Re-score one of them the same way, or pass --allow-mixed to show "
                                     f"them marked {MIXED}")
                known.append(sig)
    return seen


def _detail_boards(aggs: list[dict[str, Any]], allow_mixed: bool) -> list[Board]:
    """One board per metric that declares a detail table, over the same runs, captioned by its title."""
    titles: dict[str, str] = {}
    for agg in aggs:
        for name, m in agg["metrics"].items():
            details = m.get("metadata", {}).get("details")
            if details and name not in titles:
                titles[name] = details.get("title", name)
    boards = []
    for name, title in titles.items():
        only = [{**agg, "metrics": {name: agg["metrics"][name]}} for agg in aggs if name in agg["metrics"]]
        board = _board(only, allow_mixed, detail=True)
        board.caption = f"{title}: {board.caption}"
        boards.append(board)
    return boards


def _board(aggs: list[dict[str, Any]], allow_mixed: bool = False, detail: bool = False) -> Board:
    cols = _columns(aggs, detail)
    sigs = _reference_signatures(aggs, allow_mixed)
    notes: dict[str, str] = {}
    rows = []
    for agg in aggs:
        cells = []
        for name, key, _ in cols:
            m = agg["metrics"].get(name)
            if m is None:
                cells.append(Cell())
                continue
            if m["status"] == "unavailable":
                notes[f"{name}: {m['reason']}"] = f"n/a {name}: {m['reason']}" + \
                    (f" Remedy: {m['remedy']}" if m.get("remedy") else "")
                cells.append(Cell(unavailable=m["reason"]))
                continue
            v = m["values"].get(key)
            if v is None:
                cells.append(Cell())
                continue
            failed = _failed_text(m)
            if failed:
                notes[f"{agg['run']}/{name}/failed"] = f"{agg['run']}, {name}: {_failed_note(m)}" + \
                    (" — over 5%, read the value with care" if m.get("flagged") else "")
            sig = m.get("signature", {}).get("settings")
            mixed = sig is not None and len(sigs.get(name, [])) > 1 and sig != sigs[name][0]
            if mixed:
                notes[f"{agg['run']}/{name}/mixed"] = (f"{MIXED} {agg['run']}, {name}: computed differently "
                                                      f"({'; '.join(differences(sigs[name][0], sig))})")
            cells.append(Cell(v["value"], v.get("low"), v.get("high"), failed=failed, flagged=bool(m.get("flagged")),
                              mixed=mixed))
        rows.append((_row_label(agg), cells))
    first = aggs[0]
    d, boot = first["dataset"], first.get("bootstrap", {})
    unit = d.get("unit") or "sample"
    where = f"{d['name']}" + (f" {d['split']} split" if d.get("split") else "") + \
        (f", reference: {d['sections']}" if d.get("sections", "findings") != "findings" else "")
    resampled = "studies" if boot.get("unit") == "study" else "samples"
    caption = (f"{where}, {first['n']} {unit}s (data {d.get('fingerprint', '')[:8]}); values x100, "
               f"bootstrap 95% interval over {resampled} in brackets")
    from bench.signatures import format_signature

    texts = {name: [format_signature(s) for s in found] for name, found in sigs.items()}
    per_row = {_row_label(agg): [m["signature"]["text"] for m in agg["metrics"].values() if "signature" in m]
               for agg in aggs}
    return Board([h for _, _, h in cols], rows, list(notes.values()), caption, dict(d), texts, per_row,
                 keys=[k for _, k, _ in cols])


def _row_label(agg: dict[str, Any]) -> str:
    """The run's name, marked when some of its predictions were not made the system's own way."""
    k = agg.get("fallbacks", 0)
    if not k:
        return agg["run"]
    return f"{agg['run']} ({100 * k / agg['n']:.0f}% fallback)"


def _failed_text(m: dict[str, Any]) -> str | None:
    parts = []
    n_failed = m.get("n_failed_samples", 0)
    if n_failed:
        parts.append(f"{n_failed}/{n_failed + m.get('n_scored', 0)} samples failed")
    f = m.get("failures")
    if f and f.get("failed"):
        parts.append(f"{f['failed']}/{f['of']} failed")
    return ", ".join(parts) or None


def _failed_note(m: dict[str, Any]) -> str:
    parts = []
    if m.get("n_failed_samples"):
        parts.append(f"{m['n_failed_samples']} samples could not be scored and are left out of the value")
    f = m.get("failures")
    if f and f.get("failed"):
        parts.append(f"{f['failed']} of {f['of']} {f.get('what', 'judgements')}")
    return "; ".join(parts)


def render(boards: Board | list[Board], fmt: str = "md", intervals: bool = True) -> str:
    boards = [boards] if isinstance(boards, Board) else boards
    if fmt not in ("md", "csv", "html"):
        raise BenchError(f"unknown format {fmt!r}; choose one of: md, csv, html")
    if fmt == "csv":
        return _csv([one for b in boards for one in [b, *b.details]])
    parts = []
    if len(boards) > 1:
        why = ("These runs were scored on different data (dataset fingerprint, split or unit differ), "
               "so they are shown in separate tables and must not be compared across tables.")
        parts.append(why if fmt == "md" else f"<p>{html.escape(why)}</p>")
    for b in boards:
        for one in [b, *b.details]:
            parts.append(_md(one, intervals) if fmt == "md" else _html(one, intervals))
    return "\n".join(parts)


def _md(board: Board, intervals: bool) -> str:
    lines = [f"_{board.caption}_", "", "| run | " + " | ".join(board.headers) + " |",
             "|---|" + "---|" * len(board.headers)]
    lines += ["| " + name + " | " + " | ".join(c.text(intervals) for c in cells) + " |"
              for name, cells in board.rows]
    lines += ["| " + name + " | " + " | ".join(c.text(False) for c in cells) + " |"
              for name, cells, _ in board.published]
    lines += [""] + [f"- {n}" for n in board.notes]
    if board.signatures:
        lines += ["", "Signatures:", ""] + [f"- `{t}`" for texts in board.signatures.values() for t in texts]
    return "\n".join(lines).rstrip() + "\n"


def _csv(boards: list[Board]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    for b in boards:
        head = ["dataset", "fingerprint", "split", "unit", "run"]
        for h in b.headers:
            head += [h, f"{h} low", f"{h} high"]
        w.writerow(head + ["signatures"])
        g = b.group
        for name, cells in b.rows:
            row = [g.get("name", ""), g.get("fingerprint", ""), g.get("split", ""), g.get("unit", ""), name]
            for c in cells:
                row += ["n/a", "", ""] if c.unavailable is not None else [_pct(c.value), _pct(c.low), _pct(c.high)]
            w.writerow(row + [" ; ".join(b.row_signatures.get(name, []))])
        for name, cells, source in b.published:
            row = [g.get("name", ""), g.get("fingerprint", ""), g.get("split", ""), g.get("unit", ""), name]
            for c in cells:
                row += [_pct(c.value), "", ""]
            w.writerow(row + [f"published: {source}"])
    return buf.getvalue()


def _html(board: Board, intervals: bool) -> str:
    e = html.escape
    out = [f"<table>\n<caption>{e(board.caption)}</caption>",
           "<tr><th>run</th>" + "".join(f"<th>{e(h)}</th>" for h in board.headers) + "</tr>"]
    for name, cells in board.rows:
        out.append(f"<tr><td>{e(name)}</td>" + "".join(_html_cell(c, intervals) for c in cells) + "</tr>")
    for name, cells, source in board.published:
        out.append(f'<tr class="published" title="{e(source)}"><td>{e(name)}</td>'
                   + "".join(_html_cell(c, False) for c in cells) + "</tr>")
    out.append("</table>")
    out += [f"<p>{e(n)}</p>" for n in board.notes]
    if board.signatures:
        out.append("<p>Signatures:</p><ul>" + "".join(f"<li><code>{e(t)}</code></li>"
                                                      for texts in board.signatures.values() for t in texts) + "</ul>")
    return "\n".join(out) + "\n"


def _html_cell(c: Cell, intervals: bool) -> str:
    title = f' title="{html.escape(c.unavailable)}"' if c.unavailable is not None else ""
    return f"<td{title}>{html.escape(c.text(intervals))}</td>"


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}"
