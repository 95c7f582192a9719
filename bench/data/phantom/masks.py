"""Pixel masks of the findings planted in a phantom image, regenerated from the dataset's seed.

A phantom image is a pure function of its seeded generator, its findings and its nuisances
(anatomy.py), so the mask of one finding needs no stored file: the image is drawn again twice
from the same generator state -- with all its findings, and with that one finding left out --
and the mask is where the two differ by at least `threshold` grey levels. Both drawings leave
out the pixel noise (the only draw that follows a finding's own random draws), so the
difference is the finding's own footprint: a device's metal, an effusion's fluid, the band of
heart that cardiomegaly adds to the normal silhouette.

Nothing is written into the dataset, so its images, reports, labels and fingerprint stay as
they are; `write_masks` saves them as PNG files elsewhere when a file is wanted.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.phantom.anatomy import Nuisance, Painter
from bench.data.phantom.findings import FINDINGS, StudyPlan, assign_ids, sample_split
from bench.data.phantom.generate import _SPLIT_CODE, GENERATOR_VERSION, MANIFEST, SPLITS
from bench.errors import BenchError, DataError

THRESHOLD = 3  # grey levels (of 255) a finding must change a pixel by to count as its own


class PhantomMasks:
    """Finding masks of the frontal images of one phantom dataset."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise DataError(f"{self.root} is not a phantom dataset ({MANIFEST} missing): only phantom images have "
                            "planted findings with known pixels")
        manifest = json.loads(path.read_text())
        if str(manifest.get("version")) != GENERATOR_VERSION:
            raise DataError(f"{path} was written by phantom generator version {manifest.get('version')}, this is "
                            f"version {GENERATOR_VERSION}; regenerate the dataset to get its masks")
        self.seed = int(manifest["seed"])
        self.image_size = int(manifest["image_size"])
        counts = manifest["counts"]
        by_split = {s: sample_split(s, int(counts[s]["frontal"]), self.seed) for s in SPLITS}
        assign_ids([st for s in SPLITS for st in by_split[s]], self.seed)
        # dicom_id -> (split code, index in the split, study): what generate() seeded the image with.
        self._where: dict[str, tuple[int, int, StudyPlan]] = {
            st.frontal_dicom: (_SPLIT_CODE[s], i, st) for s in SPLITS for i, st in enumerate(by_split[s])}
        self._painter = Painter(self.image_size)

    def findings(self, dicom_id: str) -> list[str]:
        return list(self._study(dicom_id)[2].findings)

    def _study(self, dicom_id: str) -> tuple[int, int, StudyPlan]:
        if dicom_id not in self._where:
            raise BenchError(f"{dicom_id!r} is not a frontal image of the phantom in {self.root}")
        return self._where[dicom_id]

    def render(self, dicom_id: str, leave_out: str | None = None, noise: bool = True) -> np.ndarray:
        """The image as generate() drew it (noise=True), or noise-free and without `leave_out`."""
        code, index, st = self._study(dicom_id)
        rng = np.random.default_rng([self.seed, 404, code, index, 0])
        nz = Nuisance.sample(rng, st.subject.width, st.subject.height)
        if not noise:
            nz = replace(nz, noise=0.0)
        findings = {k: v for k, v in st.findings.items() if k != leave_out}
        return self._painter.frontal(rng, findings, nz, ap=st.view == "AP")

    def masks(self, dicom_id: str, names: list[str] | None = None, threshold: int = THRESHOLD) -> dict[str, np.ndarray]:
        """{finding: bool mask (image_size, image_size)} for the findings planted in the image
        (all of them, or those of `names` that are planted)."""
        unknown = sorted(set(names or []) - set(FINDINGS))
        if unknown:
            raise BenchError(f"unknown finding(s) {unknown}; the phantom plants: {', '.join(FINDINGS)}")
        planted = self.findings(dicom_id)
        full = self.render(dicom_id, noise=False).astype(np.int16)
        out = {}
        for name in planted:
            if names is not None and name not in names:
                continue
            without = self.render(dicom_id, leave_out=name, noise=False).astype(np.int16)
            out[name] = np.abs(full - without) >= threshold
        return out


def write_masks(root: str | Path, out_dir: str | Path, split: str = "test") -> int:
    """Save every planted finding's mask of a split's frontal images as
    out_dir/<dicom_id>/<finding>.png (white = finding); returns the number written."""
    pm = PhantomMasks(root)
    if split not in _SPLIT_CODE:
        raise BenchError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    n = 0
    for dicom, (code, _, _) in pm._where.items():
        if code != _SPLIT_CODE[split]:
            continue
        for name, m in pm.masks(dicom).items():
            d = Path(out_dir) / dicom
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m.astype(np.uint8) * 255, mode="L").save(d / f"{name}.png")
            n += 1
    return n
