"""Published results: the citation file bench/published_results.json, read and checked.

Published numbers are quoted, never measured here: they carry their source, the data they
were computed on (dataset, split, unit, sections), and no intervals. Only the leaderboard
reads the tables (to show them beside measured runs, marked, when asked) and `bench compute`
reads the compute figures; no statistic, bootstrap, paired test or regression check ever
sees them, since they only ever live in these objects, never in a run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bench.errors import BenchError

FILE = "published_results.json"


@dataclass(frozen=True)
class PublishedRow:
    system: str
    source: str
    values: dict[str, float]  # our column key -> value as printed (percent)


@dataclass(frozen=True)
class PublishedTable:
    id: str
    title: str
    source: str
    dataset: dict[str, str]  # name, split, unit, sections
    notes: str
    rows: list[PublishedRow] = field(default_factory=list)

    def matches(self, group: dict[str, Any]) -> bool:
        """Whether measured runs on `group` (a board's dataset summary) were made on the same data
        as this table: dataset, split and reference sections. The unit is stated, not required."""
        return (group.get("name") == self.dataset.get("name") and group.get("split") == self.dataset.get("split")
                and group.get("sections", "findings") == self.dataset.get("sections", "findings"))

    def describe_data(self) -> str:
        d = self.dataset
        return f"{d.get('name')} {d.get('split')} split, {d.get('unit', 'image')} level, reference: {d.get('sections')}"


def read_document(path: Path | None = None) -> dict[str, Any]:
    try:
        text = Path(path).read_text() if path else resources.files("bench").joinpath(FILE).read_text()
        return json.loads(text)
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read the published results {path or FILE}: {e}") from e


def load_tables(path: Path | None = None) -> list[PublishedTable]:
    doc = read_document(path)
    tables = []
    for t in doc.get("tables", []):
        columns: dict[str, str] = t["columns"]
        rows = []
        for r in t["rows"]:
            unknown = set(r["values"]) - set(columns)
            if unknown:
                raise BenchError(f"published table {t['id']}: row {r['system']!r} has values for unknown columns "
                                 f"{sorted(unknown)}")
            rows.append(PublishedRow(r["system"], r["source"], {columns[k]: float(v) for k, v in r["values"].items()}))
        tables.append(PublishedTable(t["id"], t["title"], t["source"], dict(t["dataset"]), t.get("notes", ""), rows))
    return tables


def compute_figures(path: Path | None = None) -> dict[str, Any]:
    """The quoted compute figures (the paper's Appendix F): {"systems": {name: {...}}, "source": ...}."""
    return read_document(path).get("compute", {"systems": {}})
