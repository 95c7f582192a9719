"""The records every stage of the harness passes along.

A `Sample` is the unit of evaluation: one frontal image (the paper's convention) or, with
`unit="study"`, one study represented by its first frontal image. Everything a system may
look at is here; the reference findings travel with it so that scorers need nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Prior:
    """An earlier report of the same subject, without dates (DESIGN.md §1.8)."""

    study_id: str
    text: str  # findings of the prior (impression as fallback), as the reader extracted them
    days_before: float  # time between the prior study and the current one, in days


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


@dataclass(frozen=True)
class Skipped:
    """An input the harness could not use, and why. Runs list these in their manifest."""

    path: str
    reason: str


@dataclass
class Dataset:
    name: str  # "mimic-cxr" or "phantom"
    root: Path
    split: str
    unit: str  # "image" or "study"
    samples: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    fingerprint: str = ""  # hash of what was read: ids, references, image file sizes

    def __len__(self) -> int:
        return len(self.samples)
