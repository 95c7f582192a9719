"""RadFact scores from entailment verdicts (docs/metrics.md, RadFact).

Per study:
    logical precision = entailed candidate phrases / candidate phrases
    logical recall    = entailed reference phrases / reference phrases
Either is NaN when its side has no phrases (0/0), as in the reference implementation.
Over studies each is averaged NaN-aware (studies where it is NaN are left out), and
F1 = 2PR / (P + R) is taken of the two means, not averaged per study. P = R = 0 gives
F1 = 0; a NaN mean gives a NaN F1.

A study whose judge answers cannot be matched to its phrases (evidence pointing at no
premise phrase) is invalid and dropped from both means, as the reference does; it is
counted. So are LLM failures (unparseable answers, counted as not entailed) and phrase
rewrites (the judge echoed a different hypothesis than it was given).

A *failed* study is different: the judge gave no answer for one of its requests (server
unreachable, 5xx or timeouts after the retries, key or model refused). Its row has
`radfact_failed = True` and neutral statistics (NaN precision and recall, invalid-flag
off, every count 0), so it adds nothing to any sum: the harness leaves failed rows out of
aggregates and resamples, and `sufficient_statistics` zeroes them as well. Failures are
never scores.

Each row also counts the judge's answers the study used (`radfact_judgements`: report
phrasings plus entailment verdicts) and how many of them could not be read
(`radfact_unparseable` = llm_failures + phrase_failures), for the metric's `failures()`.

For the bootstrap each study is one row of sufficient statistics, and every corpus value
is a function of their column sums (see `SUFFICIENT` and `aggregate_totals`), so any
multiset of rows, repeats included, aggregates correctly and fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

PREFIX = "radfact"

# Column order of the sufficient-statistics matrix.
SUFFICIENT = ("precision_sum", "precision_n", "recall_sum", "recall_n", "llm_failures", "phrase_rewrites",
              "invalid", "phrase_failures")

# Corpus values, in table order.
COLUMNS = (f"{PREFIX}_f1", f"{PREFIX}_precision", f"{PREFIX}_recall", f"{PREFIX}_llm_failures",
           f"{PREFIX}_phrase_rewrites", f"{PREFIX}_invalid_studies", f"{PREFIX}_phrase_failures")


@dataclass(frozen=True)
class StudyScore:
    """One study's outcome.

    precision/recall: NaN when that side has no phrases or the study is invalid.
    candidate_entailed, n_candidate, reference_entailed, n_reference: the counts behind them.
    """

    candidate_entailed: int
    n_candidate: int
    reference_entailed: int
    n_reference: int
    llm_failures: int = 0
    phrase_rewrites: int = 0
    invalid: bool = False
    phrase_failures: int = 0  # reports (0, 1 or 2) whose phrasing answer could not be read
    failed: bool = False  # the judge gave no answer for one of the study's requests: not scored
    judgements: int = 0  # judge answers the study used: phrasings + entailment verdicts

    def __post_init__(self) -> None:
        if not (0 <= self.candidate_entailed <= self.n_candidate and 0 <= self.reference_entailed <= self.n_reference):
            raise ValueError(f"entailed counts must lie in [0, phrases]: {self}")
        if self.failed and (self.n_candidate or self.n_reference or self.llm_failures or self.phrase_failures
                            or self.phrase_rewrites or self.invalid or self.judgements):
            raise ValueError(f"a failed study carries no counts (its row must move no aggregate): {self}")

    @classmethod
    def failure(cls) -> "StudyScore":
        """The neutral score of a study the judge did not answer."""
        return cls(0, 0, 0, 0, failed=True)

    @property
    def precision(self) -> float:
        return _ratio(self.candidate_entailed, self.n_candidate) if not (self.invalid or self.failed) else math.nan

    @property
    def recall(self) -> float:
        return _ratio(self.reference_entailed, self.n_reference) if not (self.invalid or self.failed) else math.nan

    def row(self) -> dict[str, float | int | bool]:
        """The per-sample row: readable scores, counts, validity flags."""
        p, r = self.precision, self.recall
        return {f"{PREFIX}_precision": p, f"{PREFIX}_recall": r,
                f"{PREFIX}_precision_valid": not math.isnan(p), f"{PREFIX}_recall_valid": not math.isnan(r),
                f"{PREFIX}_n_candidate": self.n_candidate, f"{PREFIX}_n_reference": self.n_reference,
                f"{PREFIX}_candidate_entailed": self.candidate_entailed,
                f"{PREFIX}_reference_entailed": self.reference_entailed,
                f"{PREFIX}_llm_failures": self.llm_failures, f"{PREFIX}_phrase_rewrites": self.phrase_rewrites,
                f"{PREFIX}_invalid": self.invalid, f"{PREFIX}_phrase_failures": self.phrase_failures,
                f"{PREFIX}_failed": self.failed, f"{PREFIX}_judgements": self.judgements,
                f"{PREFIX}_unparseable": self.llm_failures + self.phrase_failures}


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def f1(precision: np.ndarray | float, recall: np.ndarray | float) -> np.ndarray:
    """2PR/(P+R), elementwise; 0 where P = R = 0; NaN where either is NaN."""
    p, r = np.asarray(precision, dtype=float), np.asarray(recall, dtype=float)
    s = p + r
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(s > 0, 2 * p * r / np.where(s > 0, s, 1.0), 0.0)
    return np.where(np.isnan(s), np.nan, out)


def is_failed(row: Mapping[str, object]) -> bool:
    """The row's failed flag; rows from before the flag existed (or NaN, after a concat) are not failed."""
    value = row.get(f"{PREFIX}_failed", False)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def sufficient_statistics(rows: Sequence[Mapping[str, object]]) -> np.ndarray:
    """(n, len(SUFFICIENT)) from per-sample rows (dicts or DataFrame records); a failed row is all zeros."""
    out = np.zeros((len(rows), len(SUFFICIENT)))
    for i, row in enumerate(rows):
        if is_failed(row):
            continue  # no answer, no statistics: whatever else the row holds moves nothing
        p, r = float(row[f"{PREFIX}_precision"]), float(row[f"{PREFIX}_recall"])  # type: ignore[arg-type]
        p_ok, r_ok = bool(row[f"{PREFIX}_precision_valid"]), bool(row[f"{PREFIX}_recall_valid"])
        out[i] = (p if p_ok else 0.0, float(p_ok), r if r_ok else 0.0, float(r_ok),
                  float(row[f"{PREFIX}_llm_failures"]), float(row[f"{PREFIX}_phrase_rewrites"]),  # type: ignore[arg-type]
                  float(bool(row[f"{PREFIX}_invalid"])), float(row[f"{PREFIX}_phrase_failures"]))  # type: ignore[arg-type]
    return out


def aggregate_totals(totals: np.ndarray) -> dict[str, np.ndarray]:
    """Corpus values from column sums of `sufficient_statistics`, shape (..., k) -> (...)."""
    t = np.asarray(totals, dtype=float)
    get = {name: t[..., i] for i, name in enumerate(SUFFICIENT)}
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(get["precision_n"] > 0, get["precision_sum"] / np.maximum(get["precision_n"], 1), np.nan)
        r = np.where(get["recall_n"] > 0, get["recall_sum"] / np.maximum(get["recall_n"], 1), np.nan)
    return {f"{PREFIX}_f1": f1(p, r), f"{PREFIX}_precision": p, f"{PREFIX}_recall": r,
            f"{PREFIX}_llm_failures": get["llm_failures"], f"{PREFIX}_phrase_rewrites": get["phrase_rewrites"],
            f"{PREFIX}_invalid_studies": get["invalid"], f"{PREFIX}_phrase_failures": get["phrase_failures"]}


def aggregate(scores: Sequence[StudyScore]) -> dict[str, float]:
    """Corpus values straight from study scores (the same numbers as the row path)."""
    stats = sufficient_statistics([s.row() for s in scores])
    return {k: float(v) for k, v in aggregate_totals(stats.sum(0)).items()}
