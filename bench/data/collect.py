"""What the readers beside MIMIC-CXR share: checking a request, and turning candidate rows
into samples while every row that is not kept is counted by reason (and, when there is a
file or report to point at, listed).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.data.images import image_problem
from bench.data.mimic import REASON_LIMIT, REASON_STUDY_HAS_IMAGE, UNITS, _file_size, fingerprint
from bench.data.records import Dataset, Sample, Skipped
from bench.data.sections import check_section_choice
from bench.errors import DataError

log = logging.getLogger(__name__)


def check_request(root: Path, unit: str, sections: str, what: str, hint: str) -> Path:
    """The data root, after checking the unit and section choice; a DataError naming `what`."""
    check_section_choice(sections)
    if unit not in UNITS:
        raise DataError(f"unknown unit {unit!r}; choose one of: {', '.join(UNITS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} root {root} does not exist; {hint}")
    return root


def normalise_split(split: str, splits: tuple[str, ...], aliases: dict[str, str], what: str,
                    hints: dict[str, str] | None = None) -> str:
    """`split` as the dataset names it (aliases resolved); a DataError listing the splits otherwise."""
    s = aliases.get(split.lower(), split.lower())
    if s not in splits:
        hint = (hints or {}).get(s, "")
        raise DataError(f"unknown {what} split {split!r}; choose one of: {', '.join(splits)}{hint}")
    return s


@dataclass
class Collector:
    """Samples in the order offered; one image per study at study level; `limit` samples at most."""

    unit: str
    limit: int | None = None
    check_images: bool = True
    samples: list[Sample] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    _studies: set[str] = field(default_factory=set)

    def drop(self, reason: str, listed_as: str | None = None) -> None:
        """Count a row as not kept; `listed_as` also lists it (a file or a report)."""
        self.dropped[reason] += 1
        if listed_as is not None:
            self.skipped.append(Skipped(listed_as, reason))

    def wants(self, study_id: str) -> bool:
        """Whether a usable row of this study may still become a sample (counted when not)."""
        if self.unit == "study" and study_id in self._studies:
            self.drop(REASON_STUDY_HAS_IMAGE)
            return False
        if self.limit is not None and len(self.samples) >= self.limit:
            self.drop(REASON_LIMIT)
            return False
        return True

    def image_size(self, path: Path) -> int | None:
        """The image's size when it is complete; None (dropped and listed) otherwise."""
        size, bad = image_problem(path) if self.check_images else (_file_size(path), None)
        if bad:
            self.drop(bad, str(path))
            return None
        return size

    def add(self, sample: Sample, size: int) -> None:
        self.samples.append(sample)
        self.sizes[sample.id] = size
        self._studies.add(sample.study_id)

    def dataset(self, name: str, title: str, root: Path, split: str, sections: str, n_rows: int) -> Dataset:
        counts = {reason: n for reason, n in self.dropped.most_common() if n}
        log.info("%s %s (%s level): %d rows; kept %d; skipped %d%s", title, split, self.unit, n_rows,
                 len(self.samples), len(self.skipped), "".join(f"; {n} {r}" for r, n in counts.items()))
        return Dataset(name=name, root=root, split=split, unit=self.unit, samples=self.samples, skipped=self.skipped,
                       fingerprint=fingerprint(self.samples, self.sizes), dropped=counts, sections=sections)
