"""The phantom dataset generator: layout, determinism, cohort statistics, reports, images."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data.phantom import FINDINGS, contact_sheet, generate, mentions
from bench.data.phantom.anatomy import Nuisance, Painter
from bench.data.phantom.findings import SPEC_BY_NAME, Finding, assign_ids, sample_split
from bench.data.phantom.reports import write_report
from bench.data.sections import parse_sections
from bench.errors import BenchError, DataError

N_TRAIN, N_TEST, SEED, SIZE = 160, 60, 3, 128
DICOM_ID = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{8}){4}$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom") / "ds"
    generate(root, n_train=N_TRAIN, n_test=N_TEST, seed=SEED, image_size=SIZE)
    return root


def _tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    read = lambda name: pd.read_csv(root / name, keep_default_na=False)  # noqa: E731
    return read("mimic-cxr-2.0.0-split.csv.gz"), read("mimic-cxr-2.0.0-metadata.csv.gz"), read("phantom-labels.csv.gz")


def _study_dir(root: Path, subject_id: int, study_id: int) -> Path:
    return root / "files" / f"p{str(subject_id)[:2]}" / f"p{subject_id}" / f"s{study_id}"


# ------------------------------------------------------------------------------------
# Layout, counts, splits


def test_tables_have_mimic_columns_and_types(dataset):
    split, meta, labels = _tables(dataset)
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert list(meta.columns)[:9] == [
        "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
        "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
    ]  # fmt: skip
    for df in (split, meta):
        assert df["study_id"].dtype.kind == "i" and df["subject_id"].dtype.kind == "i"
        assert df["subject_id"].between(10_000_000, 19_999_999).all()
        assert df["study_id"].between(10_000_000, 99_999_999).all()
    assert split["dicom_id"].str.match(DICOM_ID).all() and split["dicom_id"].is_unique
    assert set(split["split"]) == {"train", "validate", "test"}
    assert set(meta["ViewPosition"]) <= {"PA", "AP", "LATERAL", "LL"}
    dates = pd.to_datetime(meta["StudyDate"].astype(str), format="%Y%m%d")
    assert dates.notna().all()
    assert (meta["StudyTime"] >= 0).all() and (meta["StudyTime"] < 240000).all()
    assert set(labels["dicom_id"]) == set(split["dicom_id"]) == set(meta["dicom_id"])
    assert list(labels.columns[5 : 5 + len(FINDINGS)]) == list(FINDINGS)
    assert labels[list(FINDINGS)].isin([0, 1]).all().all()


def test_files_are_where_mimic_puts_them(dataset):
    _, meta, _ = _tables(dataset)
    for row in meta.itertuples():
        path = _study_dir(dataset, row.subject_id, row.study_id) / f"{row.dicom_id}.jpg"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "L"
            assert im.size == (row.Columns, row.Rows) == (SIZE, SIZE)
    for st in meta[["subject_id", "study_id"]].drop_duplicates().itertuples():
        report = _study_dir(dataset, st.subject_id, st.study_id).with_suffix(".txt")
        assert report.parent.name == f"p{st.subject_id}"
        assert report.read_text().strip()
    # Nothing else in the tree: every image is in the tables.
    assert len(list((dataset / "files").rglob("*.jpg"))) == len(meta)


def test_counts_and_views(dataset):
    split, meta, _ = _tables(dataset)
    df = split.merge(meta[["dicom_id", "ViewPosition"]], on="dicom_id")
    frontal = df[df["ViewPosition"].isin(["PA", "AP"])]
    counts = frontal["split"].value_counts()
    assert counts["train"] == N_TRAIN and counts["test"] == N_TEST
    assert counts["validate"] == round(0.05 * N_TRAIN)
    # Exactly one frontal image per study; some studies also have a lateral image.
    assert frontal["study_id"].is_unique and set(frontal["study_id"]) == set(df["study_id"])
    lateral = df[df["ViewPosition"].isin(["LATERAL", "LL"])]
    assert 0 < len(lateral) < len(frontal)


def test_splits_are_subject_disjoint_and_subjects_have_dated_series(dataset):
    split, meta, _ = _tables(dataset)
    per_subject = split.groupby("subject_id")["split"].nunique()
    assert (per_subject == 1).all()
    studies = meta.drop_duplicates("study_id")
    n_per_subject = studies.groupby("subject_id")["study_id"].nunique()
    assert n_per_subject.max() > 1 and n_per_subject.min() >= 1 and n_per_subject.max() <= 4
    # The first study of a subject has no comparison; later ones compare with a prior.
    for sid, group in studies.groupby("subject_id"):
        group = group.sort_values(["StudyDate", "StudyTime"])
        texts = [_study_dir(dataset, sid, s).with_suffix(".txt").read_text() for s in group["study_id"]]
        assert "COMPARISON:  None" in texts[0]
        assert all("COMPARISON:  None" not in t for t in texts[1:])


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    def digest(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    a = digest((generate(tmp_path / "a", 12, 4, seed=7, image_size=96)).root)
    b = digest((generate(tmp_path / "b", 12, 4, seed=7, image_size=96)).root)
    c = digest((generate(tmp_path / "c", 12, 4, seed=8, image_size=96)).root)
    assert a == b
    assert a.keys() != c.keys()
    assert a["mimic-cxr-2.0.0-split.csv.gz"] != c["mimic-cxr-2.0.0-split.csv.gz"]


def test_train_content_does_not_depend_on_n_test():
    a = sample_split("train", 50, seed=1)
    b = sample_split("train", 50, seed=1)
    assert [s.findings for s in a] == [s.findings for s in b]
    assert [s.view for s in a] == [s.view for s in b]


def test_bad_arguments_and_foreign_directories_are_refused(tmp_path):
    with pytest.raises(BenchError, match="n_train"):
        generate(tmp_path / "x", n_train=-1, n_test=2)
    with pytest.raises(BenchError, match="image_size"):
        generate(tmp_path / "x", n_train=2, n_test=2, image_size=10)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        generate(foreign, n_train=2, n_test=2)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_regenerating_replaces_an_earlier_phantom(tmp_path):
    root = tmp_path / "ds"
    generate(root, 20, 5, seed=0, image_size=64)
    generate(root, 6, 2, seed=0, image_size=64)
    _, meta, _ = _tables(root)
    assert len(list((root / "files").rglob("*.jpg"))) == len(meta)
    assert (meta["ViewPosition"].isin(["PA", "AP"])).sum() == 6 + 2 + 1


def test_the_mimic_reader_reads_it(dataset):
    from bench.data.mimic import load_split

    test = load_split(dataset, "test")
    assert len(test) == N_TEST and not test.skipped
    assert all(s.findings and s.view in ("PA", "AP") for s in test.samples)
    assert any(s.priors for s in test.samples)
    assert all("___" in s.indication for s in test.samples)


# ------------------------------------------------------------------------------------
# Cohort statistics (sampled without images: fast at large n)


@pytest.fixture(scope="module")
def cohort():
    studies = sample_split("train", 20_000, seed=11)
    assign_ids(studies, seed=11)
    return studies


def test_prevalences_are_realistic(cohort):
    for name in FINDINGS:
        prevalence = np.mean([st.has(name) for st in cohort])
        assert 0.05 <= prevalence <= 0.30, (name, prevalence)


def test_findings_co_occur_and_persist(cohort):
    has = lambda name: np.array([st.has(name) for st in cohort])  # noqa: E731
    edema = has("edema")
    for partner in ("cardiomegaly", "pleural_effusion_right", "pleural_effusion_left"):
        assert has(partner)[edema].mean() > has(partner)[~edema].mean() + 0.1
    pairs = [(st.prior, st) for st in cohort if st.prior is not None]
    for name in FINDINGS:
        kept = [b.has(name) for a, b in pairs if a.has(name)]
        new = [b.has(name) for a, b in pairs if not a.has(name)]
        assert np.mean(kept) > np.mean(new) + 0.2, name
        if SPEC_BY_NAME[name].sided:
            assert all(a.findings[name].side == b.findings[name].side for a, b in pairs if a.has(name) and b.has(name))
    for name in ("pacemaker", "sternotomy_wires"):  # permanent devices stay
        assert all(b.has(name) for a, b in pairs if a.has(name))


def test_dates_increase_within_a_subject(cohort):
    assert all(st.when > st.prior.when for st in cohort if st.prior is not None)


# ------------------------------------------------------------------------------------
# Reports


def test_mentions_reads_negation_hedges_and_resolution():
    assert mentions("No focal consolidation, pleural effusion, or pneumothorax.") == {
        "pneumothorax": "negative",
        "consolidation": "negative",
    }
    assert mentions("Small left pleural effusion without pneumothorax.") == {
        "pleural_effusion_left": "positive",
        "pneumothorax": "negative",
    }
    assert mentions("Possible right lower lobe pneumonia.") == {"consolidation": "uncertain"}
    assert mentions("Previously seen left pleural effusion has resolved.") == {"pleural_effusion_left": "negative"}
    assert mentions("Interval removal of the endotracheal tube. Moderate cardiomegaly.") == {
        "cardiomegaly": "positive",
        "endotracheal_tube": "negative",
    }
    assert mentions("Small bilateral pleural effusions.") == {
        "pleural_effusion_left": "positive",
        "pleural_effusion_right": "positive",
    }
    assert mentions("The heart is normal in size. The lungs are clear.") == {}


def _reference_text(report: str) -> str:
    sections = parse_sections(report)
    return " ".join(sections.get(k, "") for k in ("findings", "impression"))


def test_reports_mention_exactly_the_planted_findings(cohort):
    for index, st in enumerate(cohort[:3000]):
        report = write_report(st, np.random.default_rng([5, index]))
        got = mentions(_reference_text(report))
        for name in FINDINGS:
            if st.has(name):
                want = "uncertain" if st.findings[name].subtle else "positive"
                assert got.get(name) == want, (name, report)
            else:
                assert got.get(name, "negative") == "negative", (name, report)


def test_report_layout_varies_like_mimic(cohort):
    reports = [write_report(st, np.random.default_rng([6, i])) for i, st in enumerate(cohort[:2000])]
    sections = [parse_sections(r) for r in reports]
    assert all(s.get("findings") or s.get("impression") for s in sections)
    no_findings = np.mean(["findings" not in s for s in sections])
    assert 0.05 <= no_findings <= 0.12
    assert any("FINDINGS AND IMPRESSION:" in r for r in reports)
    assert any(r.startswith("WET READ:") for r in reports)
    assert all(re.search(r"^ INDICATION:  .*___", r, re.M) for r in reports)
    # Wording varies: many distinct findings texts even among normal studies.
    normal = [s.get("findings", "") for st, s in zip(cohort, sections) if not st.findings]
    assert len(set(normal)) > len(normal) / 4


def test_persisting_findings_are_compared_with_the_prior(cohort):
    words = re.compile(r"unchanged|again seen|stable|increase|decrease|improved|worse", re.I)
    checked = 0
    for i, st in enumerate(cohort[:3000]):
        prev = st.prior.findings if st.prior else {}
        persisting = [
            n for n, f in st.findings.items()
            if n in prev and not f.subtle and not n.startswith("pleural_effusion")
        ]  # fmt: skip
        if persisting:
            checked += 1
            assert words.search(_reference_text(write_report(st, np.random.default_rng(i))))
    assert checked > 100


# ------------------------------------------------------------------------------------
# Images: each planted finding changes the picture where it should


@pytest.fixture(scope="module")
def painter() -> Painter:
    return Painter(SIZE)


def _pair(painter: Painter, finding: Finding, ap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    nz = Nuisance(noise=0.0)
    without = painter.frontal(np.random.default_rng(0), {}, nz, ap).astype(float)
    with_ = painter.frontal(np.random.default_rng(0), {finding.name: finding}, nz, ap).astype(float)
    return without, with_


def _box(img: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Pixels in a box given in body coordinates (no pose: body = image frame)."""
    n = img.shape[0]
    c = lambda v: int(round((v + 1.0) / 2.0 * n))  # noqa: E731
    return img[c(y0) : c(y1), c(x0) : c(x1)]


CASES = [
    # finding, box where it shows (x0, x1, y0, y1), sign of the change there
    (Finding("cardiomegaly", 3), (0.4, 0.6, 0.15, 0.35), +1),
    (Finding("pleural_effusion_left", 2), (0.45, 0.75, 0.45, 0.65), +1),
    (Finding("pleural_effusion_right", 2), (-0.75, -0.45, 0.45, 0.65), +1),
    (Finding("pneumothorax", 3, "right"), (-0.78, -0.66, -0.3, 0.1), -1),
    (Finding("consolidation", 2, "left", loc=(0.45, -0.1)), (0.38, 0.52, -0.17, -0.03), +1),
    (Finding("edema", 3), (-0.4, 0.4, -0.15, 0.15), +1),
    (Finding("atelectasis", 2, "right", loc=(-0.45, 0.25)), (-0.6, -0.3, 0.15, 0.35), +1),
    (Finding("nodule", 2, "left", loc=(0.5, -0.3)), (0.47, 0.53, -0.33, -0.27), +1),
    (Finding("pacemaker"), (0.44, 0.56, -0.62, -0.54), +1),
    (Finding("endotracheal_tube"), (-0.03, 0.04, -0.9, -0.5), +1),
    (Finding("central_line", side="right"), (-0.3, -0.05, -1.0, -0.5), +1),
    (Finding("sternotomy_wires"), (-0.03, 0.07, -0.5, 0.1), +1),
]


@pytest.mark.parametrize("finding,box,sign", CASES, ids=[c[0].name for c in CASES])
def test_each_finding_changes_its_region(painter, finding, box, sign):
    without, with_ = _pair(painter, finding)
    delta = _box(with_, *box).mean() - _box(without, *box).mean()
    assert sign * delta > 3.0, delta  # grey levels out of 255
    # For sided findings most of the change is on their side (image left = patient right).
    if finding.side or finding.name.startswith("pleural_effusion"):
        diff = np.abs(with_ - without)
        half = SIZE // 2
        right_side = finding.side == "right" or finding.name.endswith("right")
        on, off = (diff[:, :half], diff[:, half:]) if right_side else (diff[:, half:], diff[:, :half])
        assert on.sum() > 3 * off.sum()


def test_rib_fracture_breaks_a_rib_locally(painter):
    finding = Finding("rib_fracture", 1, "left", loc=(4.0, 0.55))
    without, with_ = _pair(painter, finding)
    diff = np.abs(with_ - without) > 8
    ys, xs = np.nonzero(diff)
    assert len(ys) > 5
    x = xs / SIZE * 2 - 1
    assert (x > 0.35).all() and (x < 0.75).all()  # on the left, near the break


def test_subtle_findings_are_drawn_fainter(painter):
    for name, side in (("pleural_effusion_right", ""), ("consolidation", "right"), ("edema", "")):
        loc = (-0.45, 0.0) if side else (0.0, 0.0)
        clear = np.abs(np.subtract(*_pair(painter, Finding(name, 1, side, False, loc)))).sum()
        faint = np.abs(np.subtract(*_pair(painter, Finding(name, 1, side, True, loc)))).sum()
        assert 0 < faint < 0.7 * clear, name


def test_dataset_images_differ_with_findings(dataset):
    """Across the generated dataset (pose, exposure and noise varying), not just in pairs."""
    _, _, labels = _tables(dataset)
    frontal = labels[labels["ViewPosition"].isin(["PA", "AP"]) & (labels["inverted"] == 0)]

    # Contrasts within an image cancel its exposure: the region against a reference region.
    contrasts = {
        # left of the heart against the upper lung of the same side
        "cardiomegaly": ((0.35, 0.6, 0.1, 0.35), (0.35, 0.6, -0.5, -0.25), "pleural_effusion_left"),
        # the lower zone of the left lung against the right (exposure and pose cancel)
        "pleural_effusion_left": ((0.55, 0.8, 0.2, 0.45), (-0.8, -0.55, 0.2, 0.45), "pleural_effusion_right"),
        "pleural_effusion_right": ((-0.8, -0.55, 0.2, 0.45), (0.55, 0.8, 0.2, 0.45), "pleural_effusion_left"),
    }
    images = [
        np.asarray(Image.open(_study_dir(dataset, r.subject_id, r.study_id) / f"{r.dicom_id}.jpg"), dtype=float)
        for r in frontal.itertuples()
    ]
    for name, (box, ref, confounder) in contrasts.items():
        values = np.array([_box(im, *box).mean() - _box(im, *ref).mean() for im in images])
        has = frontal[name].to_numpy() == 1
        clean = frontal[confounder].to_numpy() == 0
        assert (has & clean).sum() >= 5
        assert values[has & clean].mean() > values[~has & clean].mean() + 8, name


def test_contact_sheet(dataset, tmp_path):
    out = contact_sheet(dataset, tmp_path / "sheet.png", n=8)
    with Image.open(out) as im:
        assert im.size[0] == 4 * 256 and im.size[1] >= 2 * 256
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 20
    with pytest.raises(DataError, match="phantom"):
        contact_sheet(tmp_path, tmp_path / "x.png")
