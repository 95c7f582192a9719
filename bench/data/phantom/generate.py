"""Write a phantom dataset in the MIMIC-CXR-JPG layout (docs/data.md).

    out_dir/files/pXX/pNNNNNNNN/sMMMMMMMM/<dicom_id>.jpg   images (frontal and lateral)
    out_dir/files/pXX/pNNNNNNNN/sMMMMMMMM.txt              reports
    out_dir/mimic-cxr-2.0.0-split.csv.gz                   dicom_id, study_id, subject_id, split
    out_dir/mimic-cxr-2.0.0-metadata.csv.gz                dicom_id, subject_id, study_id, ...
    out_dir/phantom-labels.csv.gz                          ground truth: findings and nuisances
    out_dir/phantom.json                                   version, seed, counts, findings

Determinism: the cohort of each split, every image and every report draw from their own
`numpy.random.Generator`, seeded from (seed, purpose, split, index), and the gzip tables
are written with a zero timestamp, so the same arguments give byte-identical files. The
train split's findings, images and reports do not depend on n_test (only the ids do,
which are drawn for all splits together so that they are unique).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench.data.phantom.anatomy import Nuisance, Painter
from bench.data.phantom.findings import FINDINGS, StudyPlan, assign_ids, sample_split
from bench.data.phantom.reports import examination, write_report
from bench.errors import BenchError, DataError

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
SPLIT_TABLE = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_TABLE = "mimic-cxr-2.0.0-metadata.csv.gz"
LABELS_TABLE = "phantom-labels.csv.gz"
MANIFEST = "phantom.json"
SPLITS = ("train", "validate", "test")
_SPLIT_CODE = {"train": 1, "validate": 2, "test": 3}
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}
NUISANCE_COLUMNS = ("rotation_deg", "shift_x", "shift_y", "width", "height", "exposure", "contrast", "noise", "inverted", "variant")


@dataclass
class PhantomSummary:
    root: Path
    seed: int
    image_size: int
    counts: dict[str, dict[str, int]]  # split -> subjects, studies, frontal, lateral
    seconds: float
    images_per_second: float
    prevalence: dict[str, float] = field(default_factory=dict)  # over all frontal images


def study_dir(root: Path, subject_id: int, study_id: int) -> Path:
    sid = str(subject_id)
    return root / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{study_id}"


def _write_gz_csv(df: pd.DataFrame, path: Path) -> None:
    # gzip with mtime 0 and no file name: the bytes depend on the table only.
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    path.write_bytes(gzip.compress(buf.getvalue().encode("utf-8"), compresslevel=6, mtime=0))


def _prepare(out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MANIFEST).exists():
            raise DataError(
                f"{out_dir} is not empty and holds no phantom dataset ({MANIFEST} missing); "
                "choose an empty or new directory, so that nothing of yours is overwritten"
            )
        # A previous phantom: replace it entirely, so no images of a larger one remain.
        shutil.rmtree(out_dir / "files", ignore_errors=True)
        for name in (SPLIT_TABLE, METADATA_TABLE, LABELS_TABLE, MANIFEST):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _check_args(n_train: int, n_test: int, n_validate: int, image_size: int) -> None:
    for name, v in (("n_train", n_train), ("n_test", n_test), ("n_validate", n_validate)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise BenchError(f"{name} must be a non-negative integer, got {v!r}")
    if n_train + n_test + n_validate == 0:
        raise BenchError("a phantom dataset needs at least one image: give n_train or n_test > 0")
    if not 64 <= image_size <= 2048:
        raise BenchError(f"image_size must be between 64 and 2048 pixels, got {image_size}")


def _label_row(study: StudyPlan, dicom: str, view: str, nz: Nuisance) -> dict:
    row: dict = {
        "dicom_id": dicom,
        "subject_id": study.subject_id,
        "study_id": study.study_id,
        "split": study.split,
        "ViewPosition": view,
    }
    for name in FINDINGS:
        row[name] = int(name in study.findings)
    row["subtle"] = ";".join(n for n, f in study.findings.items() if f.subtle)
    row["details"] = ";".join(
        f"{n}:{f.side or '-'}:{f.severity}" for n, f in study.findings.items()
    )
    for k in NUISANCE_COLUMNS:
        v = getattr(nz, k)
        row[k] = int(v) if isinstance(v, (bool, int)) else round(float(v), 4)
    return row


def generate(
    out_dir: Path,
    n_train: int,
    n_test: int,
    seed: int = 0,
    image_size: int = 256,
    progress: bool = False,
    n_validate: int | None = None,
) -> PhantomSummary:
    """Write a phantom chest X-ray dataset in the MIMIC-CXR-JPG layout to `out_dir`.

    `n_train` and `n_test` count frontal images (one per study); the validate split gets
    `n_validate` (default 5% of n_train, at least 1 when n_train > 0). Splits are by
    subject. The directory must be new, empty, or hold an earlier phantom (replaced).
    """
    out_dir = Path(out_dir)
    if n_validate is None:
        n_validate = max(1, round(0.05 * n_train)) if n_train > 0 else 0
    _check_args(n_train, n_test, n_validate, image_size)
    _prepare(out_dir)
    started = time.perf_counter()

    wanted = {"train": n_train, "validate": n_validate, "test": n_test}
    by_split = {s: sample_split(s, wanted[s], seed) for s in SPLITS}
    all_studies = [st for s in SPLITS for st in by_split[s]]
    assign_ids(all_studies, seed)

    painter = Painter(image_size)
    split_rows, meta_rows, label_rows = [], [], []
    n_images = 0
    total = sum(1 + bool(st.lateral_view) for st in all_studies)
    level = logging.INFO if progress else logging.DEBUG
    for split in SPLITS:
        code = _SPLIT_CODE[split]
        for index, st in enumerate(by_split[split]):
            sdir = study_dir(out_dir, st.subject_id, st.study_id)
            sdir.mkdir(parents=True, exist_ok=True)
            report_rng = np.random.default_rng([seed, 505, code, index])
            (sdir.parent / f"s{st.study_id}.txt").write_text(write_report(st, report_rng), encoding="utf-8")
            views = [(st.frontal_dicom, st.view)]
            if st.lateral_view:
                views.append((st.lateral_dicom, st.lateral_view))
            for k, (dicom, view) in enumerate(views):
                rng = np.random.default_rng([seed, 404, code, index, k])
                nz = Nuisance.sample(rng, st.subject.width, st.subject.height)
                if view in ("PA", "AP"):
                    pixels = painter.frontal(rng, st.findings, nz, ap=view == "AP")
                else:
                    pixels = painter.lateral(rng, st.findings, nz)
                Image.fromarray(pixels, mode="L").save(sdir / f"{dicom}.jpg", quality=92)
                n_images += 1
                if n_images % 500 == 0:
                    log.log(level, "phantom: %d/%d images", n_images, total)
                split_rows.append({"dicom_id": dicom, "study_id": st.study_id, "subject_id": st.subject_id, "split": split})
                meta_rows.append(
                    {
                        "dicom_id": dicom,
                        "subject_id": st.subject_id,
                        "study_id": st.study_id,
                        "PerformedProcedureStepDescription": examination(st),
                        "ViewPosition": view,
                        "Rows": image_size,
                        "Columns": image_size,
                        "StudyDate": int(st.when.strftime("%Y%m%d")),
                        "StudyTime": round(st.when.hour * 10000 + st.when.minute * 100 + st.when.second + st.when.microsecond / 1e6, 3),
                        "ProcedureCodeSequence_CodeMeaning": examination(st),
                        "ViewCodeSequence_CodeMeaning": _VIEW_MEANING[view],
                        "PatientOrientationCodeSequence_CodeMeaning": "Recumbent" if st.view == "AP" else "Erect",
                    }
                )
                label_rows.append(_label_row(st, dicom, view, nz))

    _write_gz_csv(pd.DataFrame(split_rows), out_dir / SPLIT_TABLE)
    _write_gz_csv(pd.DataFrame(meta_rows), out_dir / METADATA_TABLE)
    labels = pd.DataFrame(label_rows)
    _write_gz_csv(labels, out_dir / LABELS_TABLE)

    counts = {}
    for split in SPLITS:
        studies = by_split[split]
        counts[split] = {
            "subjects": len({st.subject_id for st in studies}),
            "studies": len(studies),
            "frontal": len(studies),
            "lateral": sum(bool(st.lateral_view) for st in studies),
        }
    frontal = labels[labels["ViewPosition"].isin(["PA", "AP"])]
    prevalence = {name: round(float(frontal[name].mean()), 4) for name in FINDINGS}
    manifest = {
        "generator": "saerad-bench phantom",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "image_size": image_size,
        "counts": counts,
        "findings": list(FINDINGS),
        "prevalence_frontal": prevalence,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - started
    summary = PhantomSummary(out_dir, seed, image_size, counts, seconds, n_images / max(seconds, 1e-9), prevalence)
    log.log(level, "phantom: wrote %d images to %s in %.1f s (%.0f images/s)", n_images, out_dir, seconds, summary.images_per_second)
    return summary


def summary_json(summary: PhantomSummary) -> dict:
    d = asdict(summary)
    d["root"] = str(summary.root)
    return d
