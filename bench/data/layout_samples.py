"""Small synthetic datasets in the exact published layouts of IU-Xray and CheXpert Plus.

The real datasets cannot ship with the harness; these let anyone run the readers and the
whole pipeline (`bench run --dataset iu-xray --data-root DIR`) and let the tests exercise
every rule of the readers. File names, column names and value spellings are those of the
releases (docs/data.md); images are small synthetic radiograph-like PNGs; reports are
written from a short phrase list. They include, on purpose, what the readers must handle:
lateral images, studies without a frontal image, reports with the impression only, a
report with neither findings nor impression, and (CheXpert Plus) a row whose image file is
missing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

FINDINGS = (
    ("The heart is enlarged.", "cardiomegaly"),
    ("There is a small left pleural effusion.", "effusion"),
    ("There is patchy opacity in the right lower lobe.", "opacity"),
    ("A right-sided central venous catheter is in place.", "line"),
)
NORMAL = "The heart size is normal. The lungs are clear. There is no pneumothorax or pleural effusion."
IMPRESSIONS = {(): "No acute cardiopulmonary abnormality.", "any": "Abnormal chest radiograph, see findings."}

IU_REPORT_COLUMNS = ("uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression")
IU_PROJECTION_COLUMNS = ("uid", "filename", "projection")
CHEXPERT_PLUS_COLUMNS = (
    "path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id", "patient_report_date_order",
    "report", "section_narrative", "section_clinical_history", "section_history", "section_comparison",
    "section_technique", "section_procedure_comments", "section_findings", "section_impression",
    "section_end_of_impression", "section_summary", "section_accession_number", "age", "sex", "race", "ethnicity",
    "interpreter_needed", "insurance_type", "recent_bmi", "deceased", "split",
)
CHEXPERT_PLUS_TABLE = "df_chexpert_plus_240401.csv"


def _image(rng: np.random.Generator, present: tuple[str, ...], lateral: bool, size: int = 96) -> Image.Image:
    """A grey chest-like picture: two dark lung fields, a heart shadow sized by `cardiomegaly`,
    a bright band at a base for an effusion, a blotch for an opacity, a line for a catheter."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = 0.75 + 0.05 * rng.standard_normal((size, size))
    if not lateral:
        for cx in (0.3, 0.7):
            img -= 0.45 * (((x - cx) / 0.17) ** 2 + ((y - 0.5) / 0.32) ** 2 < 1)
        r = 0.2 if "cardiomegaly" in present else 0.12
        img += 0.35 * (((x - 0.52) / r) ** 2 + ((y - 0.62) / 0.14) ** 2 < 1)
        if "effusion" in present:
            img += 0.4 * ((x < 0.5) & (y > 0.72))
        if "opacity" in present:
            img += 0.3 * (((x - 0.3) / 0.08) ** 2 + ((y - 0.65) / 0.08) ** 2 < 1)
        if "line" in present:
            img += 0.5 * ((np.abs(x - 0.25 - 0.2 * y) < 0.01) & (y < 0.5))
    else:
        img -= 0.4 * (((x - 0.5) / 0.3) ** 2 + ((y - 0.5) / 0.33) ** 2 < 1)
    return Image.fromarray((255 * np.clip(img, 0, 1)).astype(np.uint8), mode="L")


def _findings(rng: np.random.Generator) -> tuple[tuple[str, ...], str]:
    picked = [f for f in FINDINGS if rng.random() < 0.3]
    names = tuple(n for _, n in picked)
    return names, (" ".join(t for t, _ in picked) if picked else NORMAL)


def write_iu_xray(out: Path, n_studies: int = 60, seed: int = 0) -> dict[str, int]:
    """An IU-Xray tree: the two tables, images/images_normalized/*.png and R2Gen's annotation.json.

    Image file names follow the release's pattern with image numbers from 9000 up (seeded),
    so they never name a real image. Study 3 has only a lateral image; study 5's report has neither findings nor impression;
    every seventh study has the impression only; every fourth has no lateral image."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    images = out / "images" / "images_normalized"
    images.mkdir(parents=True, exist_ok=True)
    reports, projections, r2gen = [], [], {"train": [], "val": [], "test": []}
    for uid in range(1, n_studies + 1):
        present, findings = _findings(rng)
        impression = IMPRESSIONS["any"] if present else IMPRESSIONS[()]
        if uid % 7 == 0:
            findings = ""
        if uid == 5:
            findings = impression = ""
        reports.append({"uid": uid, "MeSH": ";".join(present) or "normal", "Problems": ";".join(present) or "normal",
                        "image": "Xray Chest PA and Lateral", "indication": "XXXX-year-old with cough.",
                        "comparison": "None.", "findings": findings, "impression": impression})
        views = [] if uid == 3 else [("Frontal", 1001)]
        if uid % 4 != 0:
            views.append(("Lateral", 2001))
        # Image numbers from 9000 (the release's stop near 4000) and seeded: a sample's image ids
        # (which key the token cache) never meet the real dataset's or another seed's.
        im = 9000 + seed % 1000
        for projection, k in views:
            filename = f"{uid}_IM-{im:04d}-{k}.dcm.png"
            _image(rng, present, projection == "Lateral").save(images / filename)
            projections.append({"uid": uid, "filename": filename, "projection": projection})
        # R2Gen's split: 7:1:2 over studies
        split = "train" if uid % 10 < 7 else ("val" if uid % 10 == 7 else "test")
        r2gen[split].append({"id": f"CXR{uid}_IM-{im:04d}", "report": findings,
                             "image_path": [f"CXR{uid}_IM-{im:04d}/{i}.png" for i in range(len(views))],
                             "split": split})
    _write_csv(out / "indiana_reports.csv", IU_REPORT_COLUMNS, reports)
    _write_csv(out / "indiana_projections.csv", IU_PROJECTION_COLUMNS, projections)
    (out / "annotation.json").write_text(json.dumps(r2gen))
    _mark(out, "iu-xray", seed)
    return {"studies": n_studies, "images": len(projections)}


def write_chexpert_plus(out: Path, n_train: int = 40, n_valid: int = 20, seed: int = 0) -> dict[str, int]:
    """A CheXpert Plus tree: df_chexpert_plus_240401.csv (all 27 columns) and PNG/<split>/...png.

    Studies have a frontal and (mostly) a lateral view; about half the reports have no
    findings section (as in the release, which collected impressions); the second valid
    study's report has neither; the third valid study's frontal PNG is not written. Patient
    numbers start at 90001 (seeded), above the release's."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    rows = []
    patient = 90000 + 200 * (seed % 50)  # above the release's patient numbers, apart per seed
    for split, n in (("train", n_train), ("valid", n_valid)):
        for i in range(n):
            patient += 1
            pid = f"patient{patient:05d}"
            present, findings = _findings(rng)
            impression = ("1. " + IMPRESSIONS["any"]) if present else ("1. " + IMPRESSIONS[()])
            if i % 2 == 1:
                findings = ""
            if split == "valid" and i == 1:
                findings = impression = ""
            views = [("view1_frontal", "Frontal", "AP" if rng.random() < 0.6 else "PA")]
            if i % 3 != 0:
                views.append(("view2_lateral", "Lateral", "LL"))
            for view, fl, ap_pa in views:
                rel = f"{split}/{pid}/study1/{view}.jpg"
                missing = split == "valid" and i == 2 and fl == "Frontal"
                if not missing:
                    png = out / "PNG" / Path(rel).with_suffix(".png")
                    png.parent.mkdir(parents=True, exist_ok=True)
                    _image(rng, present, fl == "Lateral").save(png)
                report = ("NARRATIVE:\nCHEST 2 VIEWS\n\nCLINICAL HISTORY: Shortness of breath.\n\n"
                          + (f"FINDINGS:\n{findings}\n\n" if findings else "")
                          + (f"IMPRESSION:\n{impression}\n" if impression else ""))
                rows.append({
                    "path_to_image": rel, "path_to_dcm": rel.replace(".jpg", ".dcm"), "frontal_lateral": fl,
                    "ap_pa": ap_pa, "deid_patient_id": pid, "patient_report_date_order": 1, "report": report,
                    "section_narrative": "CHEST 2 VIEWS", "section_clinical_history": "Shortness of breath.",
                    "section_history": "", "section_comparison": "", "section_technique": "",
                    "section_procedure_comments": "", "section_findings": findings,
                    "section_impression": impression, "section_end_of_impression": "", "section_summary": "",
                    "section_accession_number": str(9000000 + patient), "age": int(rng.integers(20, 90)),
                    "sex": "Female" if rng.random() < 0.5 else "Male", "race": "Unknown", "ethnicity": "Unknown",
                    "interpreter_needed": "No", "insurance_type": "Unknown", "recent_bmi": "", "deceased": "No",
                    "split": split})
    _write_csv(out / CHEXPERT_PLUS_TABLE, CHEXPERT_PLUS_COLUMNS, rows)
    _mark(out, "chexpert-plus", seed)
    return {"studies": n_train + n_valid, "rows": len(rows)}


def _mark(out: Path, name: str, seed: int) -> None:
    """The marker that names the tree a synthetic sample (bench.data.readers.SAMPLE_MARKER): its
    runs are labelled `<name>-sample` and encoded by the bundled phantom encoder by default."""
    from bench.data.readers import SAMPLE_MARKER

    (out / SAMPLE_MARKER).write_text(json.dumps({"dataset": name, "seed": seed, "synthetic": True,
                                                 "writer": "bench data sample"}))


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)


WRITERS = {"iu-xray": write_iu_xray, "chexpert-plus": write_chexpert_plus}
