"""Phantom truth F1 (`phantom-truth`): what a report asserts about each planted finding,
scored against the findings the phantom generator actually planted in the image.

Every other clinical metric compares a prediction with its reference report. On a phantom
dataset (bench.data.phantom) we know more than the reference: `phantom-labels.csv.gz` lists,
per image, which of the 13 findings were drawn into it. This metric reads each report with
the phantom's own rule-based labeller (`bench.data.phantom.reports.mentions`, written to
read back the generator's phrase catalogue) and asks, per finding, whether the report
asserts it present. "Uncertain" mentions ("possible ...", "cannot exclude ...") count as
present, as in the "rrg" convention of the CheXpert metrics: the generator hedges exactly
the findings it planted faintly. "Absent" and "not mentioned" count as not asserted.

Per finding, a sample contributes a (tp, fp, fn) triple; F1 depends on the rows only through
their sums, so the bootstrap and the paired tests use the vectorised additive path
(`sufficient_statistics` / `aggregate_totals`), as for the CheXpert label F1 metrics.
Micro F1 pools the counts over the 13 findings; macro F1 is the mean of the per-finding F1
(sklearn's convention: an undefined F1 is 0 and every finding counts).

Scored with the reference system, the number says how completely the references state the
planted findings (docs/metrics.md, Phantom truth F1).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from bench.data.phantom.findings import FINDINGS, dicom_id
from bench.data.phantom.generate import LABELS_TABLE, MANIFEST
from bench.data.phantom.reports import mentions
from bench.errors import MetricUnavailable
from bench.metrics.base import Metric
from bench.metrics.f1 import confusion_statistics, f1_from_counts

log = logging.getLogger(__name__)

# Bump when the reading of report text changes (patterns, normalisation, uncertain -> present).
LABELLER_VERSION = "1"
PRESENT, ABSENT, NOT_MENTIONED = "present", "absent", "not mentioned"

# How many label rows are re-derived from phantom.json's seed to confirm that the labels file
# and the manifest come from the same generation; a dicom id is a 160-bit draw from the seed,
# so a handful of rows is already conclusive, and a MIMIC-scale phantom stays fast to check.
_SEED_CHECK_ROWS = 64

# textwrap breaks lines after hyphens ("left-\nsided"), and the MIMIC reader joins wrapped lines
# with a space, so "left- sided" reaches the labeller; rejoin before matching "left-sided".
_BROKEN_HYPHEN = re.compile(r"(\w)-\s+(?=\w)")


def assertions(text: str) -> dict[str, str]:
    """Finding -> "present", "absent" or "not mentioned", for every planted finding."""
    found = mentions(_BROKEN_HYPHEN.sub(r"\1-", text or ""))
    out = {}
    for name in FINDINGS:
        label = found.get(name)
        out[name] = NOT_MENTIONED if label is None else (ABSENT if label == "negative" else PRESENT)
    return out


def asserted_matrix(texts: Sequence[str]) -> np.ndarray:
    """(n, 13) 0/1 matrix: 1 where the text asserts the finding present (uncertain included)."""
    out = np.zeros((len(texts), len(FINDINGS)), dtype=np.int8)
    for i, text in enumerate(texts):
        said = assertions(text)
        out[i] = [said[name] == PRESENT for name in FINDINGS]
    return out


@dataclass(frozen=True)
class _Labels:
    """A dataset's planted labels, indexed by sample id for one evaluation unit."""

    table: pd.DataFrame  # index: dicom_id or study_id (str); columns: split + FINDINGS
    sha: str  # short sha256 of the labels file's bytes


class PhantomTruthMetric(Metric):
    name: ClassVar[str] = "phantom-truth"
    prefix: ClassVar[str] = "phantom_truth"
    columns: ClassVar[tuple[str, ...]] = ("phantom_truth_mi", "phantom_truth_ma")
    headers: ClassVar[Mapping[str, str]] = {"phantom_truth_mi": "Truth Mi-F1", "phantom_truth_ma": "Truth Ma-F1"}
    higher_is_better: ClassVar[bool] = True
    level: ClassVar[str] = "corpus"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = (
        "F1 of the planted phantom findings (13) asserted present by the report, against the dataset's "
        "phantom-labels.csv.gz; the phantom's rule-based labeller, uncertain counts as present; "
        "micro and macro over the findings")

    def __init__(self) -> None:
        self._labels_sha = ""  # known once a labels file has been read
        self._cache: dict[tuple[str, str], _Labels] = {}  # (labels path, unit) -> labels

    # -- columns of the per-sample rows -------------------------------------------------
    def truth_columns(self) -> list[str]:
        return [f"{self.prefix}_true_{f}" for f in FINDINGS]

    def pred_columns(self) -> list[str]:
        return [f"{self.prefix}_pred_{f}" for f in FINDINGS]

    # -- scoring ------------------------------------------------------------------------
    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        # Without sample ids and their dataset there is no truth to compare with.
        raise MetricUnavailable("phantom-truth scores against a phantom dataset's planted labels and needs the "
                                "samples' ids and dataset", "score predictions against a phantom data root")

    def per_sample_for(self, ids: Sequence[str], references: Sequence[str], predictions: Sequence[str],
                       data: Mapping[str, Any] | None = None) -> pd.DataFrame:
        if len(ids) != len(predictions) or len(references) != len(predictions):
            raise ValueError(f"{len(ids)} ids, {len(references)} references and {len(predictions)} predictions")
        if data is None or not data.get("root"):
            # A predictions file with its own references names no dataset, so no planted labels.
            raise MetricUnavailable("the references came with the predictions file, so there are no planted "
                                    "labels to score against",
                                    "score against a phantom dataset (--data-root) instead of the file's references")
        labels = self._load(Path(str(data["root"])), str(data.get("unit") or "image"))
        self._check_covers(labels, [str(i) for i in ids], str(data.get("split") or ""), Path(str(data["root"])))
        truth = labels.table.loc[[str(i) for i in ids], list(FINDINGS)].to_numpy(dtype=np.int8)
        pred = asserted_matrix(list(predictions))
        rows = {c: truth[:, j] for j, c in enumerate(self.truth_columns())}
        rows.update({c: pred[:, j] for j, c in enumerate(self.pred_columns())})
        return pd.DataFrame(rows)

    # -- the labels file ----------------------------------------------------------------
    def _load(self, root: Path, unit: str) -> _Labels:
        path = root / LABELS_TABLE
        if not path.is_file():
            raise MetricUnavailable(f"{root} has no {LABELS_TABLE}: not a phantom dataset, so nothing was planted "
                                    "to score against", "use a phantom data root (bench.data.phantom.generate)")
        key = (str(path.resolve()), unit)
        raw = path.read_bytes()
        sha = hashlib.sha256(raw).hexdigest()[:16]
        cached = self._cache.get(key)
        if cached is not None and cached.sha == sha:
            self._labels_sha = sha
            return cached
        try:
            table = pd.read_csv(path, dtype={"dicom_id": str, "study_id": str, "subject_id": str, "split": str},
                                compression="gzip")
        except (OSError, ValueError, EOFError, gzip.BadGzipFile) as exc:
            raise MetricUnavailable(f"refused {path}: it cannot be read as a labels table ({exc})",
                                    "regenerate the phantom dataset") from exc
        lacking = [c for c in ("dicom_id", "study_id", "split", *FINDINGS) if c not in table.columns]
        if lacking:
            raise MetricUnavailable(f"refused {path}: it lacks the columns {lacking} of this labeller's "
                                    f"{len(FINDINGS)} findings", "regenerate the phantom dataset")
        self._check_manifest(root, table)
        if unit == "study":
            # Every image of a study carries the study's findings; one row per study is the truth.
            per_study = table.groupby("study_id", sort=False)[list(FINDINGS)]
            if (per_study.nunique() > 1).to_numpy().any():
                raise MetricUnavailable(f"refused {path}: images of one study disagree on its planted findings",
                                        "regenerate the phantom dataset")
            indexed = table.drop_duplicates("study_id").set_index("study_id")
        else:
            indexed = table.set_index("dicom_id")
        labels = _Labels(indexed[["split", *FINDINGS]], sha)
        self._cache[key] = labels
        self._labels_sha = sha
        log.info("phantom-truth: %d labelled %ss from %s (sha256 %s)", len(indexed), unit, path, sha)
        return labels

    def _check_manifest(self, root: Path, table: pd.DataFrame) -> None:
        """The labels file must belong to the dataset: same findings, and ids drawn from the seed
        that phantom.json records (a labels file copied from another generation fails here)."""
        path = root / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            seed = int(manifest["seed"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MetricUnavailable(f"refused {root / LABELS_TABLE}: {path} is missing or unreadable ({exc}), so "
                                    "the labels cannot be tied to this dataset",
                                    "regenerate the phantom dataset") from exc
        if list(manifest.get("findings", [])) != list(FINDINGS):
            raise MetricUnavailable(f"refused {root / LABELS_TABLE}: {path} lists other findings "
                                    f"({manifest.get('findings')}) than this labeller's {list(FINDINGS)}",
                                    "regenerate the phantom dataset with this version of the generator")
        # Label rows are written frontal first within each study, so a study's first row is image 0
        # and its second (if any) image 1.
        sample = table.head(_SEED_CHECK_ROWS)
        image_no = sample.groupby("study_id", sort=False).cumcount()
        for did, sid, k in zip(sample["dicom_id"], sample["study_id"], image_no):
            if dicom_id(seed, int(sid), int(k)) != did:
                raise MetricUnavailable(f"refused {root / LABELS_TABLE}: its ids were not drawn from seed {seed} "
                                        f"of {path} (dicom {did} of study {sid}); the labels file comes from "
                                        "another dataset", "restore this dataset's labels file or regenerate it")

    def _check_covers(self, labels: _Labels, ids: list[str], split: str, root: Path) -> None:
        missing = [i for i in ids if i not in labels.table.index]
        if missing:
            raise MetricUnavailable(f"refused {root / LABELS_TABLE}: {len(missing)} of {len(ids)} sample ids are not "
                                    f"in it (first: {missing[:3]}); the labels file comes from another dataset",
                                    "restore this dataset's labels file or regenerate it")
        if split:
            splits = labels.table.loc[ids, "split"]
            wrong = splits[splits != split]
            if len(wrong):
                raise MetricUnavailable(f"refused {root / LABELS_TABLE}: it puts {len(wrong)} of the {split} samples "
                                        f"in another split (first: {wrong.index[0]} in {wrong.iloc[0]})",
                                        "restore this dataset's labels file or regenerate it")

    # -- aggregation --------------------------------------------------------------------
    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        """(n, 39): per sample and finding, (tp, fp, fn)."""
        return confusion_statistics(rows, self.truth_columns(), self.pred_columns(), self)

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        """Column sums of `sufficient_statistics` (shape (..., 39)) -> micro, macro and per-finding F1."""
        totals = np.asarray(totals, dtype=float)
        t = totals.reshape(*totals.shape[:-1], len(FINDINGS), 3)
        f1 = f1_from_counts(t[..., 0], t[..., 1], t[..., 2])
        out = {f"{self.prefix}_mi": f1["micro"], f"{self.prefix}_ma": f1["macro"]}
        out.update({f"{self.prefix}_f1_{name}": f1["per_class"][..., j] for j, name in enumerate(FINDINGS)})
        return out

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        out = self.aggregate_totals(self.sufficient_statistics(rows).sum(0))
        return {k: float(v) for k, v in out.items()}

    # -- description --------------------------------------------------------------------
    def signature_settings(self) -> dict[str, Any]:
        return {"labeller": LABELLER_VERSION, "labels": self._labels_sha or "unread"}

    def config(self) -> dict:
        return {**super().config(), "labeller": LABELLER_VERSION, "labels_sha256": self._labels_sha,
                "findings": list(FINDINGS), "uncertain": "present"}
