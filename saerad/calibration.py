"""Per-feature activation thresholds, learned on the training split: say only what a feature shows.

A feature's label asserts findings ("Moderate left pleural effusion."). On the training images,
where the truth is the report, we can measure how often that assertion is right when the
feature fires at a given strength. A feature whose label is right only when it fires strongly
gets a threshold; one whose label is never reliable is not used for the report at all. This
is the rule that makes a feature-based reporter beat copying a neighbour's report: do not
assert what the features cannot reliably show.

For each labelled feature with at least one present finding in its label:
- the training images where it fires, sorted by activation, strongest first;
- at each candidate cut, precision = share of those images whose report asserts every present
  finding of the label (same finding, compatible side), recall = share of the images that
  assert them which the cut keeps;
- the threshold is the cut with the best F1 among cuts whose precision is at least
  `min_precision`; with none, the feature is not used.
Labels that assert nothing present (normal statements) keep the plain activation threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from saerad.features.statements import Topic, topics

MIN_PRECISION = 0.5
MIN_SUPPORT = 5  # training images that must clear a threshold for it to count


@dataclass(frozen=True)
class Threshold:
    feature: int
    activation: float  # use the label only where f_i >= this; inf: never
    precision: float
    recall: float
    support: int


def present(statement: str) -> set[Topic]:
    return {t for t in topics(statement) if t.present}


def covers(asserted: Iterable[Topic], report: set[Topic]) -> bool:
    """Every asserted finding appears present in the report, on a compatible side."""
    for a in asserted:
        if not any(r.present and r.finding == a.finding and (not a.side or not r.side or a.side == r.side
                                                             or "both" in (a.side, r.side)) for r in report):
            return False
    return True


def learn_thresholds(activations: np.ndarray, reports: Sequence[str], labels: Mapping[int, str],
                     min_precision: float = MIN_PRECISION, min_support: int = MIN_SUPPORT) -> dict[int, Threshold]:
    """activations: (n_train, n_features) feature activations f_i; reports: the n_train reports."""
    report_topics = [present(r) for r in reports]
    out: dict[int, Threshold] = {}
    for fid, label in labels.items():
        asserted = present(label)
        if not asserted:
            continue
        col = activations[:, fid]
        truth = np.array([covers(asserted, t) for t in report_topics])
        fired = np.flatnonzero(col > 0)
        if len(fired) == 0 or truth.sum() == 0:
            out[fid] = Threshold(fid, float("inf"), 0.0, 0.0, 0)
            continue
        order = fired[np.argsort(-col[fired], kind="stable")]
        hits = np.cumsum(truth[order])
        kept = np.arange(1, len(order) + 1)
        precision, recall = hits / kept, hits / truth.sum()
        f1 = np.where(hits > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        ok = (precision >= min_precision) & (kept >= min_support)
        if not ok.any():
            out[fid] = Threshold(fid, float("inf"), float(precision.max()), 0.0, 0)
            continue
        best = int(np.argmax(np.where(ok, f1, -1.0)))
        out[fid] = Threshold(fid, float(col[order[best]]), float(precision[best]), float(recall[best]), int(kept[best]))
    return out
