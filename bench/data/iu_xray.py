"""Read IU-Xray (the Indiana University chest X-ray collection, Open-i) into a `Dataset`.

Layout read (the Open-i collection as tables, as it is distributed on Kaggle as
"Chest X-rays (Indiana University)")::

    root/indiana_reports.csv       uid, MeSH, Problems, image, indication, comparison, findings, impression
    root/indiana_projections.csv   uid, filename, projection (Frontal | Lateral)
    root/images/images_normalized/<filename>   (or root/images/<filename>)
    root/annotation.json           the R2Gen split (Chen et al. 2020): {"train": [...], "val": [...],
                                   "test": [...]}, entries {"id": "CXR<uid>_IM-....", ...}

One report per study (`uid`); a study has one or more images. Selection, as the MIMIC-CXR
reader: frontal images only; the reference is the findings, with the impression as fallback
(or another section choice, `bench.data.sections.reference_for`); a report with neither is
dropped and listed. The split is R2Gen's 7:1:2 split of the studies (2,069 / 296 / 590),
the one most IU-Xray report-generation papers evaluate on; it is published as R2Gen's
`annotation.json`, which is read for split membership only (its reports are R2Gen's
cleaned text; ours come from the released reports table). `split="all"` takes every study.

IU-Xray has no patient ids or dates, so a study is its own subject and has no priors.
Nothing is lost silently: every projections row that does not become a sample is counted
by reason in `Dataset.dropped`, and files and reports that could not be used are listed in
`Dataset.skipped`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd

from bench.data.collect import Collector, check_request, normalise_split
from bench.data.records import Dataset, Sample, Skipped
from bench.data.sections import clean_text, no_reference_reason, reference_for
from bench.errors import DataError

log = logging.getLogger(__name__)

NAME = "iu-xray"
REPORTS_TABLE = "indiana_reports.csv"
PROJECTIONS_TABLE = "indiana_projections.csv"
SPLIT_FILE = "annotation.json"
IMAGE_DIRS = ("images/images_normalized", "images", ".")
SPLITS = ("train", "val", "test", "all")
SPLIT_ALIASES = {"validate": "val", "valid": "val", "validation": "val"}
REPORT_COLUMNS = ("uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression")
PROJECTION_COLUMNS = ("uid", "filename", "projection")
FRONTAL = "Frontal"
DOWNLOAD_HINT = ("get the Indiana University chest X-ray collection (Open-i, https://openi.nlm.nih.gov/; as "
                 "tables: Kaggle 'raddar/chest-xrays-indiana-university') and pass the directory that holds "
                 f"{REPORTS_TABLE}, {PROJECTIONS_TABLE} and images/")
SPLIT_HINT = (f"put R2Gen's IU-Xray {SPLIT_FILE} (the split of Chen et al. 2020, distributed with R2Gen's "
              "preprocessed IU-Xray) in the data root, or evaluate every study with --split all")

REASON_NO_FRONTAL = "study has no frontal image"
REASON_LATERAL = "view not selected (not Frontal)"
REASON_NO_REPORT = "image has no report row"
REASON_NOT_IN_SPLIT = "study not in the split"
_R2GEN_ID = re.compile(r"^CXR(\d+)_")


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"expected {path.name} under {path.parent}; {DOWNLOAD_HINT}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}; {DOWNLOAD_HINT}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks the columns {missing} (has {list(df.columns)}); is it the IU-Xray "
                        f"{path.name} as released?")
    for c in columns:
        df[c] = df[c].str.strip()
    return df


def image_dir(root: Path) -> Path:
    """The folder that holds the PNGs: the first of `IMAGE_DIRS` that exists."""
    for d in IMAGE_DIRS:
        if (root / d).is_dir() and (d == "." or any((root / d).iterdir())):
            return (root / d).resolve()
    return root.resolve()


def read_split(root: Path) -> dict[str, str]:
    """uid -> split ("train", "val", "test") from R2Gen's annotation.json."""
    path = root / SPLIT_FILE
    if not path.is_file():
        raise DataError(f"IU-Xray splits need {path}; {SPLIT_HINT}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}; {SPLIT_HINT}") from e
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("train", "val", "test")):
        raise DataError(f"{path} is not R2Gen's annotation.json (expected lists under train, val and test)")
    out: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for entry in doc[split]:
            m = _R2GEN_ID.match(str(entry.get("id", "")) if isinstance(entry, dict) else "")
            if m is None:
                raise DataError(f"{path}: {split} entry {entry!r} has no id of the form CXR<uid>_IM-...")
            out[str(int(m.group(1)))] = split
    return out


def load_split(
    root: Path,
    split: str,
    unit: str = "image",
    limit: int | None = None,
    check_images: bool = True,
    sections: str = "findings",
) -> Dataset:
    """One split of IU-Xray as a `Dataset`.

    unit="image": one sample per frontal image, id = the image file name without its
    extension; unit="study": one sample per study, its first frontal image by file name,
    id = the uid. Samples are in uid order, then file name.
    """
    root = check_request(root, unit, sections, "IU-Xray", DOWNLOAD_HINT)
    split = normalise_split(split, SPLITS, SPLIT_ALIASES, "IU-Xray")
    reports = _read_csv(root / REPORTS_TABLE, REPORT_COLUMNS)
    projections = _read_csv(root / PROJECTIONS_TABLE, PROJECTION_COLUMNS)
    membership = read_split(root) if split != "all" else None
    images = image_dir(root)
    by_uid = {uid: row for uid, row in zip(reports["uid"], reports.to_dict("records"))}
    if membership is not None:
        _check_split_ids(membership, by_uid, root)
    no_reason = no_reference_reason(sections)
    out = Collector(unit, limit, check_images)

    # Reports first: one that cannot give a reference, or has no frontal image, is listed once
    # (`Dataset.dropped` counts projection rows: its images are counted below).
    rows = projections.assign(_uid=pd.to_numeric(projections["uid"], errors="coerce"))
    rows = rows.sort_values(["_uid", "uid", "filename"], kind="stable")
    frontal_uids = set(rows.loc[rows["projection"] == FRONTAL, "uid"])
    references: dict[str, tuple[str, str]] = {}
    for uid, row in by_uid.items():
        if membership is None or membership.get(uid) == split:
            references[uid] = reference_for(clean_text(row["findings"]), clean_text(row["impression"]), sections)
            problem = no_reason if not references[uid][0] else (REASON_NO_FRONTAL if uid not in frontal_uids else None)
            if problem:
                out.skipped.append(Skipped(f"{root / REPORTS_TABLE}:uid={uid}", problem))

    for uid, filename, projection in zip(rows["uid"], rows["filename"], rows["projection"]):
        if uid not in by_uid:
            out.drop(REASON_NO_REPORT)
        elif uid not in references:
            out.drop(REASON_NOT_IN_SPLIT)
        elif projection != FRONTAL:
            out.drop(REASON_LATERAL)
        elif not references[uid][0]:
            out.drop(no_reason)
        elif out.wants(uid) and (size := out.image_size(images / filename)) is not None:
            text, source = references[uid]
            out.add(Sample(id=uid if unit == "study" else _stem(filename), dicom_id=_stem(filename), study_id=uid,
                           subject_id=uid, split=split, view=projection, image_path=(images / filename).absolute(),
                           findings=text, indication=clean_text(by_uid[uid]["indication"]), reference_section=source),
                    size)
    return out.dataset(NAME, "IU-Xray", root, split, sections, len(rows))


def _check_split_ids(membership: dict[str, str], by_uid: dict[str, dict], root: Path) -> None:
    """R2Gen's ids name studies by the reports table's uid: a split file whose ids match none of
    the reports is the wrong file (or another numbering), and must not select studies at random."""
    unknown = sorted(set(membership) - set(by_uid), key=lambda u: int(u))
    if len(unknown) == len(membership):
        raise DataError(f"none of the {len(membership)} studies in {root / SPLIT_FILE} has a row in "
                        f"{REPORTS_TABLE} (ids CXR<uid>_...: uid {unknown[0]} ...); is it R2Gen's IU-Xray split?")
    if unknown:
        log.warning("IU-Xray: %d of the %d studies in %s have no row in %s (e.g. uid %s); they are left out",
                    len(unknown), len(membership), SPLIT_FILE, REPORTS_TABLE, ", ".join(unknown[:5]))


def _stem(filename: str) -> str:
    # "1_IM-0001-4001.dcm.png" -> "1_IM-0001-4001.dcm": unique across the collection, and unlike
    # MIMIC's and CheXpert Plus's image ids, so token caches never mix datasets up.
    return filename[:-4] if filename.lower().endswith(".png") else filename


def detect(root: Path) -> bool:
    return (root / REPORTS_TABLE).is_file() and (root / PROJECTIONS_TABLE).is_file()
