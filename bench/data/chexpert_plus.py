"""Read CheXpert Plus (Stanford AIMI, 2024) into a `Dataset`.

Layout read (the release as downloaded)::

    root/df_chexpert_plus_240401.csv    one row per image: path_to_image, path_to_dcm,
                                        frontal_lateral (Frontal | Lateral), ap_pa, deid_patient_id,
                                        patient_report_date_order, report, section_narrative,
                                        section_clinical_history, section_history, section_comparison,
                                        section_technique, section_procedure_comments,
                                        section_findings, section_impression,
                                        section_end_of_impression, section_summary,
                                        section_accession_number, age, sex, ..., split (train | valid)
    root/PNG/train/patient00001/study1/view1_frontal.png     the PNG release
    (or root/train/patient00001/study1/view1_frontal.jpg, CheXpert's own JPEGs)

`path_to_image` names a .jpg (CheXpert's original layout) while the PNG release holds the
same path with .png under PNG/; both are looked for, the PNG first. Any
df_chexpert_plus_*.csv is accepted (the newest by name), so a later release reads the same way.

Selection, as the MIMIC-CXR reader: frontal images (frontal_lateral == Frontal); the
reference is the report's findings section, with the impression as fallback (or another
section choice); a report with neither is dropped and listed. CheXpert Plus collected
reports for their impressions, and many have no findings section, so the findings choice
keeps fewer studies than the findings+impression one. The release's splits are `train` and
`valid`; ReXrank evaluates on `valid`. A study is `patientNNNNN/studyN` of the image path; the
indication is the clinical history section (or the history section). The release has no
dates, so samples carry no priors.

Rows whose image file is missing or incomplete are skipped and listed (`Dataset.skipped`,
hence the run manifest); every row of the split that does not become a sample is counted
by reason in `Dataset.dropped`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from bench.data.collect import Collector, check_request, normalise_split
from bench.data.records import Dataset, Sample
from bench.data.sections import clean_text, no_reference_reason, reference_for
from bench.errors import DataError

NAME = "chexpert-plus"
TABLE_GLOB = "df_chexpert_plus_*.csv"
SPLITS = ("train", "valid")
SPLIT_ALIASES = {"val": "valid", "validate": "valid", "validation": "valid"}
COLUMNS = ("path_to_image", "frontal_lateral", "ap_pa", "deid_patient_id", "patient_report_date_order",
           "section_clinical_history", "section_history", "section_findings", "section_impression", "split")
FRONTAL = "Frontal"
DOWNLOAD_HINT = ("download CheXpert Plus from Stanford AIMI (https://aimi.stanford.edu/datasets/chexpert-plus) "
                 "and pass the directory that holds df_chexpert_plus_240401.csv and the PNG/ folder")
REASON_LATERAL = "view not selected (not Frontal)"
_STUDY = re.compile(r"(patient\d+)/(study\d+)/")


def find_table(root: Path) -> Path:
    found = sorted(root.glob(TABLE_GLOB))
    if not found:
        raise DataError(f"expected {TABLE_GLOB} (e.g. df_chexpert_plus_240401.csv) under {root}; {DOWNLOAD_HINT}")
    return found[-1]


def _read_table(path: Path) -> pd.DataFrame:
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}; {DOWNLOAD_HINT}") from e
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path} lacks the columns {missing} (has {list(header)}); is it the CheXpert Plus "
                        "report table as released?")
    try:
        df = pd.read_csv(path, usecols=list(COLUMNS), dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}; {DOWNLOAD_HINT}") from e
    for c in ("path_to_image", "frontal_lateral", "ap_pa", "deid_patient_id", "split"):
        df[c] = df[c].str.strip()
    return df


def image_candidates(root: Path, path_to_image: str) -> list[Path]:
    """Where an image of `path_to_image` may be: the PNG release first, then CheXpert's JPEGs."""
    rel = Path(path_to_image)
    png = rel.with_suffix(".png")
    return [root / "PNG" / png, root / png, root / "PNG" / rel, root / rel]


def load_split(
    root: Path,
    split: str,
    unit: str = "image",
    limit: int | None = None,
    check_images: bool = True,
    sections: str = "findings",
) -> Dataset:
    """One split of CheXpert Plus as a `Dataset`.

    unit="image": one sample per frontal image, id = patient-study-view (from the image path);
    unit="study": one sample per study, its first usable frontal image by path, id = patient-study.
    Samples are in the table's path order.
    """
    root = check_request(root, unit, sections, "CheXpert Plus", DOWNLOAD_HINT)
    split = normalise_split(split, SPLITS, SPLIT_ALIASES, "CheXpert Plus",
                            hints={"test": " (ReXrank evaluates on valid)"})
    table = find_table(root)
    df = _read_table(table)
    in_split = df[df["split"] == split].sort_values("path_to_image", kind="stable")
    no_reason = no_reference_reason(sections)
    out = Collector(unit, limit, check_images)
    listed: set[str] = set()  # reports already listed (a report is shared by its study's images)
    for row in in_split.to_dict("records"):
        rel = row["path_to_image"]
        m = _STUDY.search(rel)
        if m is None:
            raise DataError(f"{table}: path_to_image {rel!r} is not of the form <split>/patientN/studyN/<view>.jpg")
        study_id = f"{m.group(1)}-{m.group(2)}"
        text, source = reference_for(clean_text(row["section_findings"]), clean_text(row["section_impression"]),
                                     sections)
        if row["frontal_lateral"] != FRONTAL:
            out.drop(REASON_LATERAL)
        elif not text:
            out.drop(no_reason, None if study_id in listed else f"{table}:{rel}")
            listed.add(study_id)
        elif out.wants(study_id):
            candidates = image_candidates(root, rel)
            path = next((c for c in candidates if c.is_file()), candidates[0])
            size = out.image_size(path)
            if size is None:
                continue
            view = Path(rel).stem  # view1_frontal
            out.add(Sample(id=study_id if unit == "study" else f"{study_id}-{view}", dicom_id=f"{study_id}-{view}",
                           study_id=study_id, subject_id=row["deid_patient_id"], split=split,
                           view=row["ap_pa"] or FRONTAL, image_path=path.absolute(), findings=text,
                           indication=clean_text(row["section_clinical_history"]) or clean_text(row["section_history"]),
                           reference_section=source), size)
    return out.dataset(NAME, "CheXpert Plus", root, split, sections, len(in_split))


def detect(root: Path) -> bool:
    return any(root.glob(TABLE_GLOB))
