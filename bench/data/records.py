"""The records every stage of the harness passes along.

A `Sample` is the unit of evaluation: one frontal image (the paper's convention) or, with
`unit="study"`, one study represented by its first frontal image, with its reference
findings. A system under test never sees a test `Sample`: it gets the sample's `Query`,
which holds what a deployed model would have (image, view, indication, prior reports) and
not the findings. The scorer joins the references back by sample id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Prior:
    """An earlier report of the same subject, without dates (docs/method.md, Report composition)."""

    study_id: str
    text: str  # findings of the prior (impression as fallback), as the reader extracted them
    days_before: float  # time between the prior study and the current one, in days
    # The whole report (every section, one per line) as the composer shows it: the paper's
    # composition prompt (App. B.5) gives past reports in full, indication and comparison
    # included. Empty when the reader had only the extracted text; `text` is used then.
    report: str = ""


@dataclass(frozen=True)
class Sample:
    id: str  # dicom_id for image-level evaluation, study_id for study-level
    dicom_id: str
    study_id: str
    subject_id: str
    split: str
    view: str  # ViewPosition: PA, AP, ...
    image_path: Path  # absolute path of the JPEG
    findings: str  # the reference: findings, or impression when findings is missing
    indication: str = ""
    priors: tuple[Prior, ...] = ()
    reference_section: str = "findings"  # which section the reference came from

    def to_json(self) -> dict:
        d = asdict(self)
        d["image_path"] = str(self.image_path)
        d["priors"] = [asdict(p) for p in self.priors]
        return d

    def query(self) -> "Query":
        """What a system under test may see of this sample."""
        return Query(id=self.id, dicom_id=self.dicom_id, study_id=self.study_id, subject_id=self.subject_id,
                     split=self.split, view=self.view, image_path=self.image_path, indication=self.indication,
                     priors=self.priors)


@dataclass(frozen=True)
class Query:
    """A test sample as a system under test receives it: everything but the reference findings."""

    id: str
    dicom_id: str
    study_id: str
    subject_id: str
    split: str
    view: str
    image_path: Path
    indication: str = ""
    priors: tuple[Prior, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """An input the harness could not use, and why. Runs list these in their manifest."""

    path: str
    reason: str


@dataclass
class Dataset:
    name: str  # "mimic-cxr", "phantom", "iu-xray" or "chexpert-plus"
    root: Path
    split: str
    unit: str  # "image" or "study"
    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    fingerprint: str = ""  # hash of what was read: ids, references, image file sizes
    # Rows of the source tables not turned into samples, by reason -> count (readers that
    # drop nothing leave it empty). Counts rows (images), so it also covers drops that have
    # no single file to list in `skipped`, such as a view that was not selected.
    dropped: dict[str, int] = field(default_factory=dict)
    # Inputs that were used, but only after a stated repair (e.g. a report that is not
    # UTF-8, decoded with replacement characters), and what was done.
    repaired: list[Skipped] = field(default_factory=list)
    sections: str = "findings"  # which report sections the references are (bench.data.sections)

    def __len__(self) -> int:
        return len(self.samples)
