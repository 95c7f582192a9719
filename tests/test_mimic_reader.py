"""The MIMIC-CXR-JPG reader on small datasets written by hand in the official layout."""

from __future__ import annotations

import gzip
import json
import logging
import random
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from bench.data.export import export_jsonl
from bench.data.mimic import (
    full_report,
    REASON_IMAGE_BAD,
    REASON_IMAGE_MISSING,
    REASON_NO_REFERENCE,
    REASON_NO_REPORT,
    jpeg_problem,
    load_split,
    study_datetimes,
)
from bench.data.records import Prior
from bench.errors import DataError

# (dicom_id, subject, study, split, view, StudyDate, StudyTime); None view = no metadata row.
IMAGES = [
    ("d1", "10000001", "50000001", "train", "PA", "21800101", "80000.0"),
    ("d2", "10000001", "50000001", "train", "LATERAL", "21800101", "80000.0"),
    ("d3", "10000001", "50000002", "train", "AP", "21800111", "200000.5"),
    # PA "ccc" sorts after AP "aaa" by id: study level must still pick the PA image.
    ("ccc", "10000001", "50000003", "test", "PA", "21800115", "63000.0"),
    ("aaa", "10000001", "50000003", "test", "AP", "21800115", "63000.0"),
    ("d6", "10000001", "50000003", "test", "LL", "21800115", "63000.0"),
    ("d7", "10000002", "50000004", "test", "PA", "21810301", "120000.0"),
    ("d8", "10000002", "50000005", "test", "AP", "21810302", "90000.0"),
    ("d9", "10000002", "50000006", "train", None, None, None),
    ("d10", "10000003", "50000007", "validate", "PA", "21820505", "101010.0"),
]

REPORTS = {
    "50000001": """                                 FINAL REPORT
 INDICATION:  Fever.
 
 FINDINGS:  Lungs are clear.
 
 IMPRESSION:  Normal.
""",
    "50000002": """                                 FINAL REPORT
 IMPRESSION:  Small right effusion.
""",
    "50000003": """ WET READ: ___ ___ 3:41 PM
  Effusion.
                                 FINAL REPORT
 INDICATION:  Cough.
 
 FINDINGS:  Moderate right effusion.  No pneumothorax.
 
 IMPRESSION:  Effusion increased.
""",
    # Neither findings nor impression: the official parser would take the last paragraph,
    # the paper drops the report.
    "50000004": """ INDICATION:  Pain.
 
 COMPARISON:  None.
 
 Lungs are clear.
""",
    # 50000005 has no report file.
    "50000006": " FINDINGS:  Not selected anyway.\n",
    "50000007": " FINDINGS:  Heart size normal.\n",
}


def write_jpeg(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    img = Image.new("L", (48, 48))
    img.putdata([rng.randrange(256) for _ in range(48 * 48)])  # noise: most of the file is image data
    img.save(path, format="JPEG", quality=90)


def image_file(root: Path, dicom: str, images: list[tuple] = IMAGES) -> Path:
    for d, subject, study, *_ in images:
        if d == dicom:
            return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{d}.jpg"
    raise KeyError(dicom)


def write_reports_dir(base: Path, reports: dict[str, str], images: list[tuple] = IMAGES) -> None:
    subjects = {study: subject for _, subject, study, *_ in images}
    for study, text in reports.items():
        subject = subjects[study]
        p = base / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def write_reports_zip(path: Path, reports: dict[str, str]) -> None:
    subjects = {study: subject for _, subject, study, *_ in IMAGES}
    with zipfile.ZipFile(path, "w") as z:
        for study, text in reports.items():
            subject = subjects[study]
            z.writestr(f"files/p{subject[:2]}/p{subject}/s{study}.txt", text)


def make_mimic(
    root: Path,
    reports_beside: bool = True,
    gz: bool = True,
    images: list[tuple] = IMAGES,
    reports: dict[str, str] = REPORTS,
) -> Path:
    split = pd.DataFrame(
        [(d, study, subject, sp) for d, subject, study, sp, *_ in images],
        columns=["dicom_id", "study_id", "subject_id", "split"],
    )
    meta = pd.DataFrame(
        [
            (d, subject, study, "x", view, date, time, 3056, 2544)
            for d, subject, study, _, view, date, time in images
            if view is not None
        ],
        columns=["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                 "ViewPosition", "StudyDate", "StudyTime", "Rows", "Columns"],
    )
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".csv.gz" if gz else ".csv"
    split.to_csv(root / f"mimic-cxr-2.0.0-split{suffix}", index=False)
    meta.to_csv(root / f"mimic-cxr-2.0.0-metadata{suffix}", index=False)
    for i, (d, *_rest) in enumerate(images):
        write_jpeg(image_file(root, d, images), seed=i)
    if reports_beside:
        write_reports_dir(root, reports, images)
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_mimic(tmp_path / "mimic-cxr-jpg")


# --- selection ------------------------------------------------------------------------


def test_test_split_image_level(root: Path):
    ds = load_split(root, "test")
    # d6 (LL) is not frontal; d7's report has neither section; d8's report is missing.
    assert [s.id for s in ds.samples] == ["ccc", "aaa"]
    assert [s.view for s in ds.samples] == ["PA", "AP"]
    s = ds.samples[0]
    assert (s.dicom_id, s.study_id, s.subject_id, s.split) == ("ccc", "50000003", "10000001", "test")
    assert s.image_path == image_file(root, "ccc").absolute()
    assert s.findings == "Moderate right effusion. No pneumothorax."
    assert s.reference_section == "findings"
    assert s.indication == "Cough."
    assert sorted((k.path, k.reason) for k in ds.skipped) == sorted(
        [
            (str(root / "files/p10/p10000002/s50000004.txt"), REASON_NO_REFERENCE),
            (str(root / "files/p10/p10000002/s50000005.txt"), REASON_NO_REPORT),
        ]
    )
    assert (ds.name, ds.split, ds.unit, len(ds)) == ("mimic-cxr", "test", "image", 2)


def test_train_split_drops_lateral_and_images_without_metadata(root: Path):
    ds = load_split(root, "train")
    assert [s.id for s in ds.samples] == ["d1", "d3"]  # d2 lateral, d9 no metadata
    assert ds.skipped == []  # filtering by the paper's rules is selection, not a failure


def test_impression_is_the_fallback_reference(root: Path):
    d3 = load_split(root, "train").samples[1]
    assert (d3.findings, d3.reference_section) == ("Small right effusion.", "impression")


def test_validate_split_and_its_alias(root: Path):
    assert [s.id for s in load_split(root, "validate").samples] == ["d10"]
    assert [s.id for s in load_split(root, "val").samples] == ["d10"]
    with pytest.raises(DataError, match="choose one of: train, validate, test"):
        load_split(root, "dev")
    with pytest.raises(DataError, match="choose one of: image, study"):
        load_split(root, "test", unit="patient")


def test_views_argument(root: Path):
    assert [s.id for s in load_split(root, "test", views=("PA",)).samples] == ["ccc"]
    assert [s.id for s in load_split(root, "test", views=("LL",)).samples] == ["d6"]


def test_limit(root: Path):
    assert [s.id for s in load_split(root, "test", limit=1).samples] == ["ccc"]


# --- priors ---------------------------------------------------------------------------


def test_priors_most_recent_first_with_days_between_studies(root: Path):
    s = load_split(root, "test").samples[0]
    # 2180-01-11 20:00:00.5 -> 2180-01-15 06:30:00 is 3 days 10:29:59.5;
    # 2180-01-01 08:00:00 -> 2180-01-15 06:30:00 is 13 days 22:30:00.
    assert s.priors == (
        Prior("50000002", "Small right effusion.", pytest.approx(3 + 37799.5 / 86400),
              report="IMPRESSION: Small right effusion."),
        Prior("50000001", "Lungs are clear.", pytest.approx(13 + 81000 / 86400),
              report="INDICATION: Fever.\nFINDINGS: Lungs are clear.\nIMPRESSION: Normal."),
    )
    assert load_split(root, "test", n_priors=1).samples[0].priors == s.priors[:1]
    assert load_split(root, "test", n_priors=0).samples[0].priors == ()


def test_priors_keep_the_whole_report(tmp_path: Path):
    # Every section of a prior (wet read, indication, comparison, findings, impression) reaches
    # the composer, one section per line; banners and the source's line wrapping do not.
    images = [
        ("f1", "10000005", "70000001", "train", "PA", "21900101", "0"),
        ("f2", "10000005", "70000002", "test", "PA", "21900103", "120000"),
    ]
    reports = {
        "70000001": """ WET READ: ___ ___ 3:41 PM
  Effusion.
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  Cough, evaluate for
  pneumonia.
 
 COMPARISON:  None.
 
 FINDINGS:  Small left effusion.  No pneumothorax.
 
 IMPRESSION:  Small left effusion.
""",
        "70000002": " FINDINGS:  Now.\n",
    }
    root = make_mimic(tmp_path / "jpg", images=images, reports=reports)
    (prior,) = load_split(root, "test").samples[0].priors
    assert prior.text == "Small left effusion. No pneumothorax."  # the extracted findings, as before
    assert prior.days_before == pytest.approx(2.5)
    assert prior.report == ("WET READ: ___ ___ 3:41 PM Effusion.\n"
                            "EXAMINATION: CHEST (PA AND LAT)\n"
                            "INDICATION: Cough, evaluate for pneumonia.\n"
                            "COMPARISON: None.\n"
                            "FINDINGS: Small left effusion. No pneumothorax.\n"
                            "IMPRESSION: Small left effusion.")
    assert full_report("FINAL REPORT\r\n FINDINGS:  a\r\n b\r\n\r\n IMPRESSION: c\r\n") == "FINDINGS: a b\nIMPRESSION: c"


def test_priors_never_come_from_later_studies(root: Path):
    # (The test-split study above takes its priors from train studies: any split counts.)
    train = load_split(root, "train").samples
    assert train[0].priors == ()  # the first study has no history (the test study is later)
    assert [p.study_id for p in train[1].priors] == ["50000001"]
    # 2180-01-01 08:00:00 -> 2180-01-11 20:00:00.5 is 10 days 12:00:00.5.
    assert train[1].priors[0].days_before == pytest.approx(10 + (12 * 3600 + 0.5) / 86400)


def test_priors_without_usable_text_are_passed_over(tmp_path: Path):
    images = [
        ("e1", "10000004", "60000001", "train", "PA", "21900101", "0"),
        ("e2", "10000004", "60000002", "train", "PA", "21900201", "0"),  # report has no sections
        ("e3", "10000004", "60000003", "train", "PA", "21900301", "0"),  # no report
        ("e4", "10000004", "60000004", "test", "PA", "21900401", "0"),
        ("e5", "10000004", "60000005", "test", "AP", "21900401", "0"),  # same time as e4
    ]
    reports = {
        "60000001": " FINDINGS:  Old.\n",
        "60000002": " Lungs are clear.\n",
        "60000004": " FINDINGS:  Now.\n",
        "60000005": " FINDINGS:  Same time.\n",
    }
    root = make_mimic(tmp_path / "jpg", images=images, reports=reports)
    e4 = load_split(root, "test").samples[0]
    assert e4.id == "e4"
    # 2190 is not a leap year: 1 January to 1 April is 31 + 28 + 31 = 90 days.
    assert e4.priors == (Prior("60000001", "Old.", 90.0, report="FINDINGS: Old."),)


def test_study_datetimes_restores_leading_zeros():
    got = study_datetimes(pd.Series(["21800101", "21800101", "21800101", ""]), pd.Series(["5502.0", "213014.531", "", "1"]))
    assert list(got[:3]) == [
        pd.Timestamp("2180-01-01 00:55:02"),
        pd.Timestamp("2180-01-01 21:30:14.531"),
        pd.Timestamp("2180-01-01 00:00:00"),
    ]
    assert pd.isna(got[3])


# --- study level ----------------------------------------------------------------------


def test_study_unit_takes_pa_before_ap(root: Path):
    ds = load_split(root, "test", unit="study")
    assert [(s.id, s.dicom_id, s.view) for s in ds.samples] == [("50000003", "ccc", "PA")]
    assert len(ds.skipped) == 2  # one per unusable study, not per image


def test_study_unit_falls_back_to_next_image_when_first_is_bad(root: Path):
    p = image_file(root, "ccc")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    ds = load_split(root, "test", unit="study")
    assert [(s.id, s.dicom_id) for s in ds.samples] == [("50000003", "aaa")]
    assert (str(p), REASON_IMAGE_BAD) in [(k.path, k.reason) for k in ds.skipped]


# --- reports: directory, zip, defaults --------------------------------------------------


def test_zip_reports_equal_directory_reports(tmp_path: Path):
    root = make_mimic(tmp_path / "jpg", reports_beside=False)
    write_reports_dir(tmp_path / "reports", REPORTS)
    write_reports_zip(tmp_path / "mimic-cxr-reports.zip", REPORTS)
    for split in ("train", "test"):
        from_dir = load_split(root, split, reports=tmp_path / "reports")
        from_zip = load_split(root, split, reports=tmp_path / "mimic-cxr-reports.zip")
        assert from_zip.samples == from_dir.samples
        assert from_zip.fingerprint == from_dir.fingerprint
        assert [k.reason for k in from_zip.skipped] == [k.reason for k in from_dir.skipped]
    # Also the files/ folder itself is accepted.
    assert load_split(root, "test", reports=tmp_path / "reports" / "files").samples == from_dir.samples


def test_default_finds_zip_in_root(tmp_path: Path):
    root = make_mimic(tmp_path / "jpg", reports_beside=False)
    write_reports_zip(root / "mimic-cxr-reports.zip", REPORTS)
    assert [s.id for s in load_split(root, "test").samples] == ["ccc", "aaa"]


def test_default_finds_physionet_sibling(tmp_path: Path):
    root = make_mimic(tmp_path / "physionet.org/files/mimic-cxr-jpg/2.0.0", reports_beside=False)
    write_reports_dir(tmp_path / "physionet.org/files/mimic-cxr/2.0.0", REPORTS)
    assert [s.id for s in load_split(root, "test").samples] == ["ccc", "aaa"]


def test_no_reports_anywhere_is_a_data_error(tmp_path: Path):
    root = make_mimic(tmp_path / "jpg", reports_beside=False)
    with pytest.raises(DataError) as e:
        load_split(root, "test")
    msg = str(e.value)
    assert str(root / "files") in msg and str(root / "mimic-cxr-reports.zip") in msg
    assert "--reports" in msg


def test_wrong_reports_directory_is_a_data_error(root: Path, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no report files under"):
        load_split(root, "test", reports=tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load_split(root, "test", reports=tmp_path / "nowhere")
    (tmp_path / "reports.zip").write_text("not a zip")
    with pytest.raises(DataError, match="cannot open the reports zip"):
        load_split(root, "test", reports=tmp_path / "reports.zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "no reports here")
    with pytest.raises(DataError, match="holds no files/pXX"):
        load_split(root, "test", reports=tmp_path / "other.zip")


# --- images ---------------------------------------------------------------------------


def test_truncated_corrupt_and_missing_images_are_skipped(root: Path):
    ccc, aaa = image_file(root, "ccc"), image_file(root, "aaa")
    ccc.write_bytes(ccc.read_bytes()[:-100])
    aaa.unlink()
    ds = load_split(root, "test")
    assert ds.samples == []
    reasons = {k.path: k.reason for k in ds.skipped}
    assert reasons[str(ccc)] == REASON_IMAGE_BAD
    assert reasons[str(aaa)] == REASON_IMAGE_MISSING
    # check_images=False trusts the files.
    assert [s.id for s in load_split(root, "test", check_images=False).samples] == ["ccc", "aaa"]


def test_jpeg_check_on_truncations(tmp_path: Path):
    p = tmp_path / "x.jpg"
    write_jpeg(p, seed=3)
    good = p.read_bytes()
    assert jpeg_problem(p) == (len(good), None)
    p.write_bytes(good + b"\x00" * 10)  # zero padding after the end marker is harmless
    assert jpeg_problem(p)[1] is None
    for cut in (len(good) // 2, len(good) - 10, len(good) - 1):
        p.write_bytes(good[:cut])
        assert jpeg_problem(p) == (cut, REASON_IMAGE_BAD)
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(OSError):  # a full decode agrees that this one is broken
        with Image.open(p) as im:
            im.load()
    p.write_bytes(b"not a jpeg at all\xff\xd9")
    assert jpeg_problem(p)[1] == REASON_IMAGE_BAD
    assert jpeg_problem(tmp_path / "missing.jpg") == (-1, REASON_IMAGE_MISSING)


# --- tables ---------------------------------------------------------------------------


def test_uncompressed_tables(tmp_path: Path):
    root = make_mimic(tmp_path / "jpg", gz=False)
    assert [s.id for s in load_split(root, "test").samples] == ["ccc", "aaa"]


def test_gz_tables_are_really_gzip(root: Path):
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "rt") as f:
        assert f.readline().strip() == "dicom_id,study_id,subject_id,split"


def test_missing_root_and_tables_are_data_errors(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist.*PhysioNet"):
        load_split(tmp_path / "nope", "test")
    root = make_mimic(tmp_path / "jpg")
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(DataError) as e:
        load_split(root, "test")
    assert f"expected mimic-cxr-2.0.0-metadata.csv.gz (or mimic-cxr-2.0.0-metadata.csv) under {root}" in str(e.value)
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(DataError, match="mimic-cxr-2.0.0-split.csv.gz"):
        load_split(root, "test")


def test_table_without_required_columns(root: Path):
    pd.DataFrame({"dicom_id": ["d1"], "split": ["train"]}).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    with pytest.raises(DataError, match=r"lacks the columns \['study_id', 'subject_id'\]"):
        load_split(root, "test")


# --- fingerprint, logging, export -------------------------------------------------------


def test_fingerprint_is_stable_and_tracks_references(root: Path):
    first = load_split(root, "test").fingerprint
    assert len(first) == 16 and first == load_split(root, "test").fingerprint
    write_reports_dir(root, {"50000003": REPORTS["50000003"].replace("Moderate", "Large")})
    assert load_split(root, "test").fingerprint != first


def test_fingerprint_tracks_image_size(root: Path):
    first = load_split(root, "test").fingerprint
    write_jpeg(image_file(root, "aaa"), seed=99)
    assert load_split(root, "test").fingerprint != first


def test_summary_is_logged(root: Path, caplog):
    with caplog.at_level(logging.INFO, logger="bench.data.mimic"):
        ds = load_split(root, "test")
    text = caplog.text
    assert "kept 2; skipped 2" in text and "1 report file not found" in text
    assert "1 view not selected (not PA/AP)" in text
    # Every row of the split is kept or counted under a reason.
    assert ds.dropped == {"view not selected (not PA/AP)": 1, "report has neither findings nor impression": 1,
                          "report file not found": 1}
    assert "5 rows in the split" in text and len(ds) + sum(ds.dropped.values()) == 5


def test_export_jsonl(root: Path, tmp_path: Path):
    ds = load_split(root, "test")
    out = tmp_path / "out" / "test.jsonl"
    assert export_jsonl(ds, out) == 2
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [s.to_json() for s in ds.samples]
    assert json.loads(lines[0])["priors"][0] == {
        "study_id": "50000002",
        "text": "Small right effusion.",
        "days_before": pytest.approx(3 + 37799.5 / 86400),
        "report": "IMPRESSION: Small right effusion.",
    }
    assert not list(out.parent.glob("*.partial"))


# --- the phantom generator writes this layout -------------------------------------------


def test_reads_a_phantom_dataset_without_skips(tmp_path: Path):
    from bench.data.phantom import generate

    root = tmp_path / "phantom"
    generate(root, n_train=8, n_test=5, seed=1, image_size=64)
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    frontal = meta[meta["ViewPosition"].isin(["PA", "AP"])].merge(split[["dicom_id", "split"]], on="dicom_id")
    for name in ("train", "test"):
        ds = load_split(root, name)
        assert ds.skipped == []
        assert sorted(s.id for s in ds.samples) == sorted(frontal.loc[frontal["split"] == name, "dicom_id"])
        # Phantom subjects stay in one split with one frontal image per study, and samples
        # come in subject and date order: the priors are the subject's previous samples.
        earlier: dict[str, list[str]] = {}
        for s in ds.samples:
            assert s.image_path.is_file() and s.findings and s.reference_section in ("findings", "impression")
            assert [p.study_id for p in s.priors] == earlier.get(s.subject_id, [])[::-1][:3]
            days = [p.days_before for p in s.priors]
            assert days == sorted(days) and all(d > 0 for d in days)
            earlier.setdefault(s.subject_id, []).append(s.study_id)
        assert any(len(s.priors) == 2 for s in ds.samples)
    # One frontal image per phantom study: the study level keeps the same images.
    assert sorted(s.dicom_id for s in load_split(root, "test", unit="study").samples) == sorted(
        s.id for s in load_split(root, "test").samples
    )


def test_sample_order_does_not_depend_on_the_order_of_the_tables(tmp_path: Path):
    """Samples come in subject, study-time, study, view-preference order whatever the row order of
    the CSVs: resampling numbers studies by first appearance, so the order is part of the result."""
    import pandas as pd

    from bench.data.phantom import generate

    generate(tmp_path, n_train=10, n_test=40, seed=4, image_size=64)
    before = [s.id for s in load_split(tmp_path, "test").samples]
    for name in ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-metadata.csv.gz"):
        table = pd.read_csv(tmp_path / name, dtype=str)
        table.sample(frac=1.0, random_state=1).to_csv(tmp_path / name, index=False, compression="gzip")
    after = load_split(tmp_path, "test").samples
    assert [s.id for s in after] == before
    assert [s.subject_id for s in after] == sorted(s.subject_id for s in after)
