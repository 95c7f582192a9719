"""Which reader reads a data root: one per dataset, each producing the same `Sample` records.

`--dataset NAME` picks a reader; without it the data root's own files say which one it is
(a phantom.json, IU-Xray's two tables, a CheXpert Plus table, else MIMIC-CXR-JPG).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.data.records import Dataset
from bench.errors import DataError


@dataclass(frozen=True)
class Reader:
    name: str
    splits: str  # for messages and docs
    default_split: str


READERS = {
    "mimic-cxr": Reader("mimic-cxr", "train, validate, test", "test"),
    "phantom": Reader("phantom", "train, validate, test", "test"),
    "iu-xray": Reader("iu-xray", "train, val, test (R2Gen's split), all", "test"),
    "chexpert-plus": Reader("chexpert-plus", "train, valid", "valid"),
}


def check_dataset(name: str) -> str:
    if name not in READERS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(READERS)}")
    return name


def detect(root: Path) -> str:
    """The dataset a data root holds, from its files."""
    from bench.data import chexpert_plus, iu_xray

    if (root / "phantom.json").exists():
        return "phantom"
    if iu_xray.detect(root):
        return "iu-xray"
    if chexpert_plus.detect(root):
        return "chexpert-plus"
    return "mimic-cxr"


SAMPLE_MARKER = "layout-sample.json"  # written by bench data sample: synthetic data, not the release


def is_layout_sample(root: Path) -> bool:
    return (Path(root) / SAMPLE_MARKER).is_file()


def load(name: str, root: Path, split: str, *, unit: str = "image", reports: Path | None = None,
         limit: int | None = None, sections: str = "findings") -> Dataset:
    """`split` of the data root read by the reader of dataset `name`, named after it; a
    synthetic layout sample is named `<name>-sample`, so that no table can pass its numbers
    off as the real dataset's."""
    loader: Callable[..., Dataset]
    if check_dataset(name) in ("mimic-cxr", "phantom"):
        from bench.data.mimic import load_split as loader

        ds = loader(root, split, unit=unit, reports=reports, limit=limit, sections=sections)
    elif reports is not None:
        raise DataError(f"--reports is for MIMIC-CXR; {name} keeps its reports in its own table under the data root")
    else:
        if name == "iu-xray":
            from bench.data.iu_xray import load_split as loader
        else:
            from bench.data.chexpert_plus import load_split as loader
        ds = loader(root, split, unit=unit, limit=limit, sections=sections)
    ds.name = f"{name}-sample" if is_layout_sample(root) else name
    return ds
