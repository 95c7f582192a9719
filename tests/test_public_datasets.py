"""IU-Xray and CheXpert Plus readers on trees in their exact published layouts, the section
choices of every reader, and the whole pipeline on both (`bench run --dataset ...`).

Expected samples are recomputed here from the tables with the csv module (not with the
readers' code): frontal rows, of studies in the split, whose report gives a reference."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bench.data import chexpert_plus
from bench.data.layout_samples import CHEXPERT_PLUS_TABLE, write_chexpert_plus, write_iu_xray
from bench.data.readers import detect, load
from bench.data.sections import reference_for
from bench.errors import DataError

BENCH = str(Path(sys.executable).parent / "bench")


@pytest.fixture(scope="module")
def iu(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("iu")
    write_iu_xray(root, n_studies=30, seed=1)
    return root


@pytest.fixture(scope="module")
def cx(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cx")
    write_chexpert_plus(root, n_train=12, n_valid=8, seed=2)
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- the section choice --------------------------------------------------------------------

def test_reference_for_each_choice_by_hand():
    assert reference_for("Lungs clear.", "Normal.", "findings") == ("Lungs clear.", "findings")
    assert reference_for("", "Normal.", "findings") == ("Normal.", "impression")
    assert reference_for("", "", "findings") == ("", "none")
    assert reference_for("Lungs clear.", "Normal.", "findings+impression") == ("Lungs clear. Normal.",
                                                                                "findings+impression")
    assert reference_for("", "Normal.", "findings+impression") == ("Normal.", "impression")
    assert reference_for("Lungs clear.", "", "findings+impression") == ("Lungs clear.", "findings")
    assert reference_for("", "Normal.", "findings-only") == ("", "none")
    with pytest.raises(DataError, match="findings\\+impression"):
        reference_for("a", "b", "impression")


# -- IU-Xray -------------------------------------------------------------------------------

def _iu_expected(root: Path, split: str) -> dict[str, tuple[str, str]]:
    """filename stem -> (uid, reference) of the frontal images the test split should keep."""
    doc = json.loads((root / "annotation.json").read_text())
    in_split = {e["id"].split("_")[0][3:] for e in doc[split]}
    reports = {r["uid"]: r for r in _rows(root / "indiana_reports.csv")}
    out = {}
    for p in _rows(root / "indiana_projections.csv"):
        r = reports[p["uid"]]
        ref = r["findings"] or r["impression"]
        if p["uid"] in in_split and p["projection"] == "Frontal" and ref:
            out[p["filename"][: -len(".png")]] = (p["uid"], ref)
    return out


def test_iu_xray_test_split_frontal_findings_with_impression_fallback(iu):
    assert detect(iu) == "iu-xray"
    ds = load("iu-xray", iu, "test")
    want = _iu_expected(iu, "test")
    assert len(want) >= 5
    assert {s.id: (s.study_id, s.findings) for s in ds.samples} == want
    assert all(s.view == "Frontal" and s.image_path.is_file() and s.priors == () for s in ds.samples)
    # every seventh study has only an impression: it is the reference, and says so
    fallback = [s for s in ds.samples if int(s.study_id) % 7 == 0]
    assert fallback and all(s.reference_section == "impression" for s in fallback)
    assert ds.dropped["study not in the split"] > 0 and ds.dropped["view not selected (not Frontal)"] > 0
    # a synthetic layout sample is never named as the real dataset
    assert ds.name == "iu-xray-sample" and ds.split == "test" and len(ds.fingerprint) == 16


def test_iu_xray_report_with_neither_section_is_dropped_and_listed(iu):
    ds = load("iu-xray", iu, "train")  # study 5 (no findings, no impression) is in R2Gen's train split
    assert "5" not in {s.study_id for s in ds.samples}
    listed = [k for k in ds.skipped if k.path.endswith("indiana_reports.csv:uid=5")]
    assert [k.reason for k in listed] == ["report has neither findings nor impression"]
    assert ds.dropped["report has neither findings nor impression"] == 1  # its one frontal image
    # study 3 has only a lateral image
    assert any(k.path.endswith("uid=3") and k.reason == "study has no frontal image" for k in ds.skipped)


def test_iu_xray_section_choices_and_study_unit(iu):
    both = {s.id: s for s in load("iu-xray", iu, "all", sections="findings+impression").samples}
    reports = {r["uid"]: r for r in _rows(iu / "indiana_reports.csv")}
    s1 = next(s for s in both.values() if s.study_id == "1")
    assert s1.findings == f"{reports['1']['findings']} {reports['1']['impression']}"
    strict = load("iu-xray", iu, "all", sections="findings-only")
    assert not any(int(s.study_id) % 7 == 0 for s in strict.samples)
    assert strict.dropped["report has no findings section"] >= 4
    study = load("iu-xray", iu, "all", unit="study")
    assert len({s.id for s in study.samples}) == len(study.samples) == len({s.study_id for s in study.samples})
    assert all(s.id == s.study_id for s in study.samples)


def test_iu_xray_needs_r2gen_split_file_unless_all(tmp_path, iu):
    root = tmp_path / "iu"
    shutil.copytree(iu, root)
    (root / "annotation.json").unlink()
    with pytest.raises(DataError, match="annotation.json.*--split all"):
        load("iu-xray", root, "test")
    assert len(load("iu-xray", root, "all").samples) > 0
    with pytest.raises(DataError, match="unknown IU-Xray split 'validate2'"):
        load("iu-xray", root, "validate2")
    # a split file that names none of the reports' studies is refused, not used
    (root / "annotation.json").write_text(json.dumps({"train": [{"id": "CXR9999_IM-0001"}], "val": [], "test": []}))
    with pytest.raises(DataError, match="none of the 1 studies .* has a row in indiana_reports.csv"):
        load("iu-xray", root, "test")


def test_iu_xray_renamed_column_is_named(tmp_path, iu):
    root = tmp_path / "iu"
    shutil.copytree(iu, root)
    table = root / "indiana_reports.csv"
    table.write_text(table.read_text().replace("findings", "finding", 1))
    with pytest.raises(DataError, match=r"lacks the columns \['findings'\]"):
        load("iu-xray", root, "test")


# -- CheXpert Plus -------------------------------------------------------------------------

def test_chexpert_plus_valid_split(cx):
    assert detect(cx) == "chexpert-plus"
    ds = load("chexpert-plus", cx, "valid")
    want = {}
    for r in _rows(cx / CHEXPERT_PLUS_TABLE):
        png = cx / "PNG" / Path(r["path_to_image"]).with_suffix(".png")
        ref = r["section_findings"] or r["section_impression"]
        if r["split"] == "valid" and r["frontal_lateral"] == "Frontal" and ref and png.is_file():
            want[r["path_to_image"]] = (ref, r["ap_pa"], r["deid_patient_id"])
    got = {str(s.image_path.relative_to(cx / "PNG").with_suffix(".jpg")): (s.findings, s.view, s.subject_id)
           for s in ds.samples}
    assert got == want and len(want) >= 4
    s = ds.samples[0]
    assert s.id == s.dicom_id == f"{s.study_id}-view1_frontal" and s.indication == "Shortness of breath."


def test_chexpert_plus_missing_image_and_empty_report_are_listed(cx):
    ds = load("chexpert-plus", cx, "valid")
    reasons = {(Path(k.path).name if "PNG" in k.path else k.path.split(":", 1)[1], k.reason) for k in ds.skipped}
    assert ("view1_frontal.png", "image file missing") in reasons
    assert ("valid/patient90414/study1/view1_frontal.jpg", "report has neither findings nor impression") in reasons
    assert ds.dropped["image file missing"] == 1


def test_chexpert_plus_reads_the_original_jpeg_layout_too(tmp_path, cx):
    root = tmp_path / "cx"
    root.mkdir()
    shutil.copy(cx / CHEXPERT_PLUS_TABLE, root)
    for png in (cx / "PNG").rglob("*.png"):  # CheXpert's own layout: root/<path_to_image>.jpg
        jpg = root / png.relative_to(cx / "PNG").with_suffix(".jpg")
        jpg.parent.mkdir(parents=True, exist_ok=True)
        Image.open(png).save(jpg, quality=90)
    a, b = load("chexpert-plus", cx, "valid"), load("chexpert-plus", root, "valid")
    assert [s.id for s in a.samples] == [s.id for s in b.samples]
    assert all(s.image_path.suffix == ".jpg" for s in b.samples)
    assert (a.name, b.name) == ("chexpert-plus-sample", "chexpert-plus")  # no sample marker in the copy


def test_chexpert_plus_split_names_and_truncated_image(tmp_path, cx):
    with pytest.raises(DataError, match="ReXrank evaluates on valid"):
        chexpert_plus.load_split(cx, "test")
    root = tmp_path / "cx"
    shutil.copytree(cx, root)
    victim = next((root / "PNG" / "valid").rglob("view1_frontal.png"))
    victim.write_bytes(victim.read_bytes()[:200])
    ds = load("chexpert-plus", root, "valid")
    assert (str(victim), "image is not a complete PNG (corrupt or truncated)") in {(k.path, k.reason) for k in ds.skipped}


# -- MIMIC-CXR layout: the same section choice ----------------------------------------------

def test_mimic_reader_findings_plus_impression(tmp_path):
    from bench.data.mimic import load_split
    from bench.data.phantom import generate
    from bench.data.sections import parse_sections

    generate(tmp_path, n_train=12, n_test=12, seed=3)
    plain = {s.id: s for s in load_split(tmp_path, "test").samples}
    both = {s.id: s for s in load_split(tmp_path, "test", sections="findings+impression").samples}
    assert plain.keys() == both.keys()
    for sid, s in both.items():
        report = (tmp_path / "files" / f"p{s.subject_id[:2]}" / f"p{s.subject_id}" / f"s{s.study_id}.txt").read_text()
        sec = parse_sections(report)
        if sec.get("findings") and sec.get("impression"):
            assert s.findings == sec["findings"] + " " + sec["impression"] != plain[sid].findings
        else:
            assert s.findings == plain[sid].findings


# -- the pipeline, as a user runs it ----------------------------------------------------------

def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name,split", [("iu-xray", "test"), ("chexpert-plus", "valid")])
def test_bench_run_on_each_dataset_gives_a_leaderboard(tmp_path, iu, cx, name, split):
    root = iu if name == "iu-xray" else cx
    # no --encoder: a layout sample is synthetic, so the bundled phantom encoder is the default
    r = _bench("run", "--dataset", name, "--data-root", str(root), "--split", split, "--system", "nn,constant",
               "--metrics", "bleu", "--bootstrap", "20", "--out", str(tmp_path / "runs"),
               "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"_{name}-sample {split} split, " in r.stdout
    assert "| nn |" in r.stdout and "| constant |" in r.stdout
    manifest = json.loads((tmp_path / "runs" / "nn" / "manifest.json").read_text())["generate"]
    ident = manifest["identity"]
    assert (ident["dataset"], ident["reader"], ident["sections"], ident["encoder"]) == \
        (f"{name}-sample", name, "findings", "phantom")
    if name == "chexpert-plus":  # the row whose image is missing is in the manifest
        assert any(k["reason"] == "image file missing" for k in manifest["skipped"]["valid"])


def test_dataset_without_data_root_is_a_one_line_error(tmp_path):
    r = _bench("data", "export", "--dataset", "iu-xray", "--out", str(tmp_path / "x.jsonl"), cwd=tmp_path)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--dataset iu-xray needs --data-root" in errors[0]
    r = _bench("data", "export", "--dataset", "nih", "--data-root", str(tmp_path), "--out", "x.jsonl", cwd=tmp_path)
    assert r.returncode == 2 and "unknown dataset 'nih'" in r.stderr


@pytest.mark.parametrize("unit", ["image", "study"])
def test_every_row_is_kept_or_counted(iu, cx, unit):
    """kept + dropped = the rows read, by reason, whatever the split, unit and limit."""
    n_iu = len(_rows(iu / "indiana_projections.csv"))
    for split in ("train", "test", "all"):
        ds = load("iu-xray", iu, split, unit=unit)
        assert len(ds.samples) + sum(ds.dropped.values()) == n_iu, (split, ds.dropped)
    n_valid = sum(r["split"] == "valid" for r in _rows(cx / CHEXPERT_PLUS_TABLE))
    for limit in (None, 2):
        ds = load("chexpert-plus", cx, "valid", unit=unit, limit=limit)
        assert len(ds.samples) + sum(ds.dropped.values()) == n_valid, (limit, ds.dropped)
        assert limit is None or len(ds.samples) == limit


def test_chexpert_plus_section_choices(cx):
    rows = {r["path_to_image"]: r for r in _rows(cx / CHEXPERT_PLUS_TABLE) if r["split"] == "valid"}
    both = load("chexpert-plus", cx, "valid", sections="findings+impression")
    for s in both.samples:
        r = rows[str(s.image_path.relative_to(cx / "PNG").with_suffix(".jpg"))]
        f, i = r["section_findings"], r["section_impression"]
        assert s.findings == (f"{f} {i}" if f and i else f or i)
        assert s.reference_section == ("findings+impression" if f and i else "findings" if f else "impression")
    strict = load("chexpert-plus", cx, "valid", sections="findings-only")
    assert {s.id for s in strict.samples} < {s.id for s in both.samples}
    assert all(rows[str(s.image_path.relative_to(cx / "PNG").with_suffix(".jpg"))]["section_findings"]
               for s in strict.samples)
    assert strict.dropped["report has no findings section"] > 0
