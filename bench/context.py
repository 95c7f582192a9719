"""RunContext: what a system may use while fitting and generating.

It owns the dataset splits (loaded once), the encoder and its token cache (so SAE-Rad and
the nearest-neighbour baseline share encoded tokens), the device, the one cache root every
cache lives under, and a record of what was used, which ends up in the run manifest.

The split under test is sealed: a system reads it only as the queries `generate` receives
(no findings). `dataset(split)` refuses it, and `test_findings` answers only a context
opened for a system that declares `reads_test_findings` (the `reference` sanity system).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.data.records import Dataset, Query, Sample
from bench.errors import BenchError

log = logging.getLogger(__name__)

# Names understood by bench.encoders.load_encoder; kept as strings here so that building a
# context does not import torch.
DEFAULT_ENCODER = "microsoft/rad-dino"
PHANTOM_ENCODER = "phantom"  # the small Dinov2 bundled in bench/assets/phantom-encoder


@dataclass
class RunContext:
    data_root: Path
    dataset_name: str  # a reader of bench.data.readers: "phantom", "mimic-cxr", "iu-xray", "chexpert-plus"
    cache_dir: Path
    work_dir: Path  # the run directory: systems may keep their intermediate files here
    unit: str = "image"
    reports: Path | None = None
    encoder_id: str | None = None  # None: the default for the dataset
    device: str | None = None
    batch_size: int = 32
    limit: int | None = None  # evaluate only the first N samples of the split (smoke runs)
    progress: bool = True
    eval_split: str | None = None  # the split under test: sealed from systems (see the module doc)
    allow_test_findings: bool = False
    sections: str = "findings"  # which report sections make the reference (bench.data.sections)
    _datasets: dict[str, Dataset] = field(default_factory=dict, repr=False)
    _encoder: Any = field(default=None, repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    used: dict[str, Any] = field(default_factory=dict)  # fingerprints etc. for the manifest

    # -- data --------------------------------------------------------------
    def dataset(self, split: str) -> Dataset:
        """A split a system may read whole (findings included): anything but the split under test."""
        # Evaluating on the training split itself is allowed: fit() sees it whole anyway.
        if self.eval_split is not None and split == self.eval_split and split != "train":
            raise BenchError(f"systems may not read the {split} split under test; they receive its samples as "
                             "queries in generate() (image, view, indication, priors), without findings")
        return self._load(split)

    def evaluation_dataset(self) -> Dataset:
        """The split under test, findings included: for the harness (queries, references), not systems."""
        if self.eval_split is None:
            raise BenchError("this context has no split under test")
        return self._load(self.eval_split)

    def test_findings(self, sample_id: str) -> str:
        """The reference findings of a test sample, for systems that declare `reads_test_findings`."""
        if not self.allow_test_findings:
            raise BenchError("only a system that declares reads_test_findings (the `reference` sanity check) "
                             "may read the test findings")
        findings = self._findings_by_id()
        if sample_id not in findings:
            raise BenchError(f"no test sample with id {sample_id!r}")
        return findings[sample_id]

    def _findings_by_id(self) -> dict[str, str]:
        return {s.id: s.findings for s in self.evaluation_dataset().samples}

    def _load(self, split: str) -> Dataset:
        if split not in self._datasets:
            from bench.data.readers import load

            t0 = time.perf_counter()
            ds = load(self.dataset_name, self.data_root, split, unit=self.unit, reports=self.reports,
                      limit=self.limit if split != "train" else None, sections=self.sections)
            self._datasets[split] = ds
            self.timings[f"load_{split}_s"] = time.perf_counter() - t0
            self.used.setdefault("datasets", {})[split] = {
                "n": len(ds), "skipped": len(ds.skipped), "fingerprint": ds.fingerprint}
        return self._datasets[split]

    def fork(self) -> "RunContext":
        """A context for one system of a run: the loaded splits and the encoder are shared,
        timings and records (what ends up in that run's manifest) are its own."""
        new = copy.copy(self)
        new._datasets = dict(self._datasets)
        new.timings, new.used = {}, {}
        for split, d in self._datasets.items():
            new.used.setdefault("datasets", {})[split] = {"n": len(d), "skipped": len(d.skipped),
                                                         "fingerprint": d.fingerprint}
        return new

    def loaded(self) -> dict[str, Dataset]:
        """The splits read so far."""
        return dict(self._datasets)

    # -- encoder and tokens ------------------------------------------------
    @property
    def encoder_name(self) -> str:
        if self.encoder_id:
            return self.encoder_id
        from bench.data.readers import is_layout_sample

        # Synthetic data (the phantom, a layout sample) is encoded by the bundled phantom encoder.
        synthetic = self.dataset_name == "phantom" or is_layout_sample(self.data_root)
        return PHANTOM_ENCODER if synthetic else DEFAULT_ENCODER

    def encoder(self):
        if self._encoder is None:
            from bench.encoders import load_encoder

            self._encoder = load_encoder(self.encoder_name, device=self.device)
            self.used["encoder"] = {"model": self.encoder_name, "fingerprint": self._encoder.fingerprint,
                                    **_device_record(self._encoder.device)}
        return self._encoder

    def tokens(self, samples: Sequence[Sample | Query], label: str) -> np.ndarray:
        """CLS tokens (N, d) aligned with `samples`; encodes what the cache lacks.

        `label` (e.g. the split) names this batch of work in timings and the manifest."""
        from bench.encoders import encode_dataset, load_tokens

        enc = self.encoder()
        cache = self.cache_dir / "tokens"
        t0 = time.perf_counter()
        report = encode_dataset(list(samples), enc, cache, batch_size=self.batch_size,
                                progress=self.progress)
        key = f"encode_{label}"
        self.timings[f"{key}_s"] = self.timings.get(f"{key}_s", 0.0) + time.perf_counter() - t0
        self.used.setdefault("encoding", {})[label] = _report_dict(report)
        return load_tokens(cache, enc.fingerprint, [s.dicom_id for s in samples])


def _report_dict(report: Any) -> dict:
    if hasattr(report, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(report)
    return dict(report) if isinstance(report, dict) else {"report": str(report)}


def _device_record(device: Any) -> dict[str, str]:
    """The device the encoder ran on, named (a GPU by its model), for timings read later."""
    import platform

    record = {"device": str(device)}
    if getattr(device, "type", "") == "cuda":
        import torch

        record["device_name"] = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        record["device_name"] = f"{device} ({platform.processor() or platform.machine()})"
    return record
