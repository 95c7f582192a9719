"""Shared pieces of the CheXpert-observation F1 metrics (CheXbert and the rule-based labeller).

Both metrics label every reference and every prediction with the 14 CheXpert observations,
map the labels to binary with the "rrg" convention and score them the way the field does
(docs/metrics.md, CheXbert F1): sklearn's `classification_report` with its default
`zero_division`, so a class whose precision or recall is undefined scores 0, and every class
(also one without support) counts in the macro average. Ma-5/Ma-14 are macro averages over the top-5 / all 14
observations, Mi-5/Mi-14 micro averages.

F1 only needs, per class, the true-positive, false-positive and false-negative counts, and
those are sums over samples. So a per-sample row carries the 14 (reference, prediction)
label pairs, and any multiset of rows - a bootstrap resample with repeats, a permuted pair of
systems - re-aggregates exactly (`LabelF1Metric.aggregate`), with a vectorised path for the
resamplers (`sufficient_statistics` / `aggregate_totals`, see bench/stats/bootstrap.py).
"""

from __future__ import annotations

import re
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd

from bench.metrics.base import Metric

# The CheXpert observations in CheXbert's head order (docs/metrics.md, CheXbert F1).
OBSERVATIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices", "No Finding",
)
TOP5: tuple[str, ...] = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")
TOP5_INDEX: tuple[int, ...] = tuple(OBSERVATIONS.index(o) for o in TOP5)

# Class codes of CheXbert's heads; the rule-based labeller uses the same codes.
BLANK, POSITIVE, NEGATIVE, UNCERTAIN = 0, 1, 2, 3
CLASS_NAMES = {BLANK: "blank", POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain"}


def slug(observation: str) -> str:
    """Column-name form of an observation: "Pleural Effusion" -> "pleural_effusion"."""
    return re.sub(r"[^a-z0-9]+", "_", observation.lower()).strip("_")


def to_binary_rrg(labels: np.ndarray) -> np.ndarray:
    """The "rrg" mapping: positive and uncertain -> 1; blank and negative -> 0."""
    labels = np.asarray(labels)
    return ((labels == POSITIVE) | (labels == UNCERTAIN)).astype(np.int8)


def confusion_counts(ref: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-sample, per-class (tp, fp, fn) as an (n, classes, 3) int array from 0/1 matrices."""
    ref = np.asarray(ref).astype(bool)
    pred = np.asarray(pred).astype(bool)
    if ref.shape != pred.shape or ref.ndim != 2:
        raise ValueError(f"reference and prediction label matrices must be (n, classes) and equal, "
                         f"got {ref.shape} and {pred.shape}")
    return np.stack([ref & pred, ~ref & pred, ref & ~pred], axis=-1).astype(np.int64)


def confusion_statistics(rows: pd.DataFrame, truth_columns: Sequence[str], pred_columns: Sequence[str],
                         metric: object) -> np.ndarray:
    """(n, classes * 3) per-sample (tp, fp, fn) from a metric's 0/1 truth and prediction columns."""
    missing = [c for c in [*truth_columns, *pred_columns] if c not in rows.columns]
    if missing:
        raise ValueError(f"{getattr(metric, 'name', metric)}: per-sample rows lack columns {missing[:3]}...; "
                         f"pass the rows that {type(metric).__name__} produced")
    truth = rows[list(truth_columns)].to_numpy()
    pred = rows[list(pred_columns)].to_numpy()
    return confusion_counts(truth, pred).reshape(len(rows), -1)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # sklearn's default zero_division ("warn") yields 0 where the denominator is 0.
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den > 0)
    return out


def f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Macro and micro F1 over the last axis (classes) of count arrays, sklearn's convention.

    Per class, F1 = 2PR/(P+R) with P and R set to 0 where undefined (equivalently
    2tp / (2tp + fp + fn), 0 when that denominator is 0); macro = mean over all classes;
    micro = F1 of the summed counts. Leading axes (e.g. bootstrap resamples) are kept.
    """
    tp, fp, fn = (np.asarray(a, dtype=float) for a in (tp, fp, fn))
    per_class = _safe_div(2 * tp, 2 * tp + fp + fn)
    stp, sfp, sfn = tp.sum(-1), fp.sum(-1), fn.sum(-1)
    return {
        "per_class": per_class,
        "macro": per_class.mean(-1),
        "micro": _safe_div(2 * stp, 2 * stp + sfp + sfn),
    }


def label_f1(ref: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Ma-5, Ma-14, Mi-5, Mi-14 (keys "ma5", "ma14", "mi5", "mi14") of two (n, 14) 0/1 matrices."""
    counts = confusion_counts(ref, pred).sum(0)  # (14, 3)
    return {k: float(v) for k, v in _four_scores(counts).items()}


def _four_scores(totals: np.ndarray) -> dict[str, np.ndarray]:
    """totals: (..., 14, 3) summed (tp, fp, fn) -> the four leaderboard values, shape (...)."""
    all14 = f1_from_counts(totals[..., 0], totals[..., 1], totals[..., 2])
    top = totals[..., list(TOP5_INDEX), :]
    top5 = f1_from_counts(top[..., 0], top[..., 1], top[..., 2])
    return {"ma5": top5["macro"], "ma14": all14["macro"], "mi5": top5["micro"], "mi14": all14["micro"]}


class LabelF1Metric(Metric):
    """Base for metrics that label reports with the 14 observations and score F1.

    Subclasses set `name`, `prefix` (leaderboard column prefix) and implement `label`,
    which returns an (n, 14) int array of class codes (BLANK/POSITIVE/NEGATIVE/UNCERTAIN;
    No Finding uses BLANK/POSITIVE only).
    """

    prefix: ClassVar[str]  # column prefix, e.g. "chexbert" -> "chexbert_ma5", ...

    def label(self, reports: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    # -- per-sample rows ---------------------------------------------------------------
    def ref_columns(self) -> list[str]:
        return [f"{self.prefix}_ref_{slug(o)}" for o in OBSERVATIONS]

    def pred_columns(self) -> list[str]:
        return [f"{self.prefix}_pred_{slug(o)}" for o in OBSERVATIONS]

    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        if len(references) != len(predictions):
            raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
        # One labelling pass over both sides: batching is what makes the neural labeller fast.
        labels = self.label(list(references) + list(predictions))
        ref = to_binary_rrg(labels[: len(references)])
        pred = to_binary_rrg(labels[len(references):])
        return self.rows_from_binary(ref, pred)

    def rows_from_binary(self, ref: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
        data = {c: ref[:, j] for j, c in enumerate(self.ref_columns())}
        data.update({c: pred[:, j] for j, c in enumerate(self.pred_columns())})
        return pd.DataFrame(data)

    # -- aggregation -------------------------------------------------------------------
    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        """(n, 42): per sample and class, (tp, fp, fn); F1 depends on rows only via their sums."""
        return confusion_statistics(rows, self.ref_columns(), self.pred_columns(), self)

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        """Column sums of `sufficient_statistics` (shape (..., 42)) -> leaderboard values and the
        F1 of each observation (`<prefix>_f1_<observation>`, the detail table)."""
        totals = np.asarray(totals).reshape(*np.shape(totals)[:-1], len(OBSERVATIONS), 3)
        out = {f"{self.prefix}_{k}": v for k, v in _four_scores(totals).items()}
        per_class = f1_from_counts(totals[..., 0], totals[..., 1], totals[..., 2])["per_class"]
        out.update({key: per_class[..., j] for j, key in enumerate(self.finding_columns())})
        return out

    @classmethod
    def finding_columns(cls) -> list[str]:
        return [f"{cls.prefix}_f1_{slug(o)}" for o in OBSERVATIONS]

    @classmethod
    def detail_table(cls) -> dict:
        # Papers now publish F1 per observation beside the averages; same F1 convention as Ma-14.
        return {"title": f"{cls.name}: F1 per observation",
                "columns": [{"key": key, "header": o} for key, o in zip(cls.finding_columns(), OBSERVATIONS)]}

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        out = self.aggregate_totals(self.sufficient_statistics(rows).sum(0))
        return {k: float(v) for k, v in out.items()}
