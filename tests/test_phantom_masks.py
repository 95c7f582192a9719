"""Finding masks of the phantom: regenerated from the seeds, without touching the dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data.phantom import generate
from bench.data.phantom.generate import LABELS_TABLE, study_dir
from bench.data.phantom.masks import PhantomMasks, write_masks
from bench.errors import BenchError


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    generate(root, n_train=120, n_test=30, seed=3, image_size=64)
    return root


def _frontal(root: Path) -> pd.DataFrame:
    t = pd.read_csv(root / LABELS_TABLE, dtype={"dicom_id": str})
    return t[t.ViewPosition.isin(["PA", "AP"])]


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_regenerated_images_are_the_written_ones(phantom):
    pm = PhantomMasks(phantom)
    for _, r in _frontal(phantom).head(6).iterrows():
        jpeg = np.asarray(Image.open(study_dir(phantom, r.subject_id, r.study_id) / f"{r.dicom_id}.jpg"), dtype=float)
        again = pm.render(r.dicom_id).astype(float)
        # JPEG at quality 92 moves pixels by a grey level or two; another image differs by tens.
        assert np.abs(jpeg - again).mean() < 3.0


def test_masks_sit_where_the_generator_draws_each_finding(phantom):
    pm = PhantomMasks(phantom)
    t = _frontal(phantom)
    seen = set()
    for name in ("pacemaker", "sternotomy_wires", "cardiomegaly"):
        for dicom in t.loc[t[name] == 1, "dicom_id"].head(3):
            m = pm.masks(dicom, [name])[name]
            assert m.any(), (name, dicom)
            ys, xs = np.nonzero(m)
            cx, cy = xs.mean() / 64 * 2 - 1, ys.mean() / 64 * 2 - 1  # body frame, roughly (pose aside)
            if name == "pacemaker":  # generator pocket at (0.50, -0.58), leads down to the heart
                assert cx > 0.1 and cy < 0.0
            elif name == "sternotomy_wires":  # six loops on the midline, y -0.50 .. 0.13
                assert abs(cx) < 0.15 and -0.6 < cy < 0.2
            else:  # the band the enlarged heart adds around the normal silhouette, low and central
                assert abs(cx) < 0.35 and cy > -0.2
            seen.add(name)
    assert seen == {"pacemaker", "sternotomy_wires", "cardiomegaly"}


def test_only_planted_findings_have_masks_and_each_differs(phantom):
    pm = PhantomMasks(phantom)
    t = _frontal(phantom).set_index("dicom_id")
    for dicom in t.index[:20]:
        got = pm.masks(dicom)
        planted = [f for f in pm.findings(dicom)]
        assert set(got) == set(planted)
        assert all(int(t.at[dicom, f]) == 1 for f in got)


def test_masks_change_nothing_in_the_dataset(phantom, tmp_path):
    before = _listing(phantom)
    n = write_masks(phantom, tmp_path / "masks", split="test")
    assert n > 0 and len(list((tmp_path / "masks").rglob("*.png"))) == n
    assert _listing(phantom) == before


def test_bad_input(phantom, tmp_path):
    pm = PhantomMasks(phantom)
    with pytest.raises(BenchError, match="not a frontal image"):
        pm.masks("no-such-image")
    dicom = _frontal(phantom).dicom_id.iloc[0]
    with pytest.raises(BenchError, match="unknown finding"):
        pm.masks(dicom, ["pacemakr"])
    with pytest.raises(BenchError, match="not a phantom dataset"):
        PhantomMasks(tmp_path)
