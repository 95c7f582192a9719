"""Linear probe: how well a frozen token carries each finding.

For each finding, a logistic regression is fitted on standardised train tokens and scored by
AUROC on the test tokens. A finding whose test labels are all one class has no AUROC (NaN).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def probe_auroc(
    train_tokens: np.ndarray,
    train_labels: Mapping[str, np.ndarray] | np.ndarray,
    test_tokens: np.ndarray,
    test_labels: Mapping[str, np.ndarray] | np.ndarray,
    C: float = 1.0,
    max_iter: int = 2000,
) -> dict[str, float]:
    """AUROC on the test split of a logistic-regression probe per finding.

    Labels: a mapping finding -> 0/1 vector, or an (N, K) 0/1 array (findings named "0".."K-1").
    Returns {finding: AUROC}; NaN where the train or test labels hold a single class.
    """
    test = _as_columns(test_labels, len(test_tokens), "test")
    scores = probe_scores(train_tokens, train_labels, test_tokens, test_labels, C, max_iter)
    return {name: float(roc_auc_score(test[name], s[1])) if s is not None else math.nan
            for name, s in scores.items()}


def probe_scores(
    train_tokens: np.ndarray,
    train_labels: Mapping[str, np.ndarray] | np.ndarray,
    test_tokens: np.ndarray,
    test_labels: Mapping[str, np.ndarray] | np.ndarray,
    C: float = 1.0,
    max_iter: int = 2000,
) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    """The probe's decision values per finding: {finding: (on train, on test)}; None where the
    train or test labels hold a single class."""
    train = _as_columns(train_labels, len(train_tokens), "train")
    test = _as_columns(test_labels, len(test_tokens), "test")
    if set(train) != set(test):
        raise ValueError(f"train and test name different findings: {sorted(set(train) ^ set(test))}")
    result: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    for name, y in train.items():
        if len(np.unique(y)) < 2 or len(np.unique(test[name])) < 2:
            result[name] = None
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        clf.fit(train_tokens, y)
        result[name] = (clf.decision_function(train_tokens), clf.decision_function(test_tokens))
    return result


def _as_columns(labels: Mapping[str, np.ndarray] | np.ndarray, n: int, which: str) -> dict[str, np.ndarray]:
    if isinstance(labels, Mapping):
        cols = {str(k): np.asarray(v).astype(int).ravel() for k, v in labels.items()}
    else:
        arr = np.asarray(labels)
        arr = arr.reshape(len(arr), -1)
        cols = {str(k): arr[:, k].astype(int) for k in range(arr.shape[1])}
    for k, v in cols.items():
        if len(v) != n:
            raise ValueError(f"{which} labels for {k!r} have {len(v)} entries for {n} tokens")
    return cols
