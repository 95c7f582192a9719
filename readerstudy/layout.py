"""Where a reader-study directory keeps what.

    manifest.json        what was exported from which runs (their signatures), settings, file hashes
    items.jsonl          every sentence row of every reader, blinded (no system or run names)
    readers.json         reader names and the secret part of their reading links
    images/              one full-resolution PNG per study, named by an opaque number
    workbooks/           one workbook per reader, to send out
    returned/            where returned workbooks go (any file name; the reader is read from the file)
    answers.sqlite       the reading page's answers (SQLite, WAL)
    key/unblinding-key.json   which run wrote report A, B, ... of each study: never given to readers,
                         never served
    results/             what `bench reader-study import` writes
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError


@dataclass(frozen=True)
class StudyDir:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def items(self) -> Path:
        return self.root / "items.jsonl"

    @property
    def readers(self) -> Path:
        return self.root / "readers.json"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def workbooks(self) -> Path:
        return self.root / "workbooks"

    @property
    def returned(self) -> Path:
        return self.root / "returned"

    @property
    def store(self) -> Path:
        return self.root / "answers.sqlite"

    @property
    def key(self) -> Path:
        return self.root / "key" / "unblinding-key.json"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def check(self) -> "StudyDir":
        """This directory, if it is a reader study `bench reader-study export` wrote."""
        for p in (self.manifest, self.items, self.readers):
            if not p.exists():
                raise BenchError(f"{self.root} is not a reader-study directory ({p.name} missing); "
                                 "make one with `bench reader-study export --runs RUN... --out DIR`")
        return self
