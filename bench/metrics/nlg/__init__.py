"""NLG metrics: BLEU-4, ROUGE-L and METEOR, faithful to pycocoevalcap (see docs/metrics-nlg.md).

All three score `normalise_text(reference)` against `normalise_text(prediction)`: PTB
tokenisation as pycocoevalcap's PTBTokenizer does it, lower-cased, punctuation tokens dropped.
Each metric's `per_sample` keeps the sufficient statistics of its corpus value, so that
`aggregate` of any multiset of rows (a bootstrap resample) is the exact corpus value.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from bench.errors import BenchError, MetricUnavailable
from bench.metrics.base import Metric
from bench.options import OptionsModel
from bench.metrics.nlg.bleu import MAX_N, bleu_from_counts, bleu_stats
from bench.metrics.nlg.meteor import (
    METEOR_STAT_FIELDS,
    MeteorParams,
    MeteorProcess,
    find_meteor_jar,
    java_available,
    meteor_from_stats,
    sum_meteor_stats,
)
from bench.metrics.nlg.rouge import BETA, rouge_l_from_parts, rouge_l_parts
from bench.metrics.nlg.text import normalise_text

__all__ = ["BleuMetric", "RougeMetric", "MeteorMetric", "normalise_text"]

log = logging.getLogger(__name__)

NORMALISATION = (
    "PTB tokenisation as pycocoevalcap's PTBTokenizer (CoreNLP 3.4.1, -lowerCase), "
    "re-implemented in Python; punctuation tokens dropped"
)


def _normalised_pairs(references: Sequence[str], predictions: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(references) != len(predictions):
        raise BenchError(
            f"got {len(references)} references but {len(predictions)} predictions; pass one prediction per reference"
        )
    for kind, texts in (("reference", references), ("prediction", predictions)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise BenchError(f"{kind} {i} is {type(text).__name__}, not a string; pass report texts ('' for none)")
    return [normalise_text(t) for t in references], [normalise_text(t) for t in predictions]


def _require(rows: pd.DataFrame, columns: Sequence[str], metric: str) -> None:
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise BenchError(f"{metric}: per-sample rows lack columns {missing}; pass rows made by its per_sample()")
    if len(rows) == 0:
        raise BenchError(f"{metric}: cannot aggregate zero samples")


class BleuMetric(Metric):
    """pycocoevalcap BLEU (corpus, 'closest' reference length, one reference per sample)."""

    name = "bleu"
    columns = ("bleu4",)
    headers = {"bleu4": "BL4"}
    description = f"BLEU-4 as pycocoevalcap Bleu(4), corpus-level, from summed n-gram counts; {NORMALISATION}"

    _STAT_COLUMNS = (
        ["bleu_testlen", "bleu_reflen"]
        + [f"bleu_guess{n}" for n in range(1, MAX_N + 1)]
        + [f"bleu_correct{n}" for n in range(1, MAX_N + 1)]
    )

    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        refs, preds = _normalised_pairs(references, predictions)
        records = []
        for ref, pred in zip(refs, preds):
            st = bleu_stats(ref, pred)
            scores = bleu_from_counts(st.testlen, st.reflen, st.guess, st.correct)
            record = {f"bleu{n}": scores[n - 1] for n in range(1, MAX_N + 1)}
            record.update(bleu_testlen=st.testlen, bleu_reflen=st.reflen)
            record.update({f"bleu_guess{n}": st.guess[n - 1] for n in range(1, MAX_N + 1)})
            record.update({f"bleu_correct{n}": st.correct[n - 1] for n in range(1, MAX_N + 1)})
            records.append(record)
        columns = [f"bleu{n}" for n in range(1, MAX_N + 1)] + self._STAT_COLUMNS
        return pd.DataFrame.from_records(records, columns=columns)

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        _require(rows, self._STAT_COLUMNS, self.name)
        # Integer sums, so the corpus value of a resample is exact.
        totals = {c: int(rows[c].sum()) for c in self._STAT_COLUMNS}
        scores = bleu_from_counts(
            totals["bleu_testlen"],
            totals["bleu_reflen"],
            [totals[f"bleu_guess{n}"] for n in range(1, MAX_N + 1)],
            [totals[f"bleu_correct{n}"] for n in range(1, MAX_N + 1)],
        )
        return {f"bleu{n}": scores[n - 1] for n in range(MAX_N, 0, -1)}

    def config(self) -> dict:
        return {**super().config(), "max_n": MAX_N, "reference_length": "closest", "tiny": 1e-15, "small": 1e-9}


class RougeMetric(Metric):
    """pycocoevalcap ROUGE-L (LCS F-measure, beta 1.2), corpus = mean of samples."""

    name = "rouge"
    columns = ("rougeL",)
    headers = {"rougeL": "RG-L"}
    level = "sample"
    description = f"ROUGE-L as pycocoevalcap Rouge() (LCS F, beta 1.2), mean over samples; {NORMALISATION}"

    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        refs, preds = _normalised_pairs(references, predictions)
        records = []
        for ref, pred in zip(refs, preds):
            lcs, pred_len, ref_len = rouge_l_parts(ref, pred)
            records.append(
                {
                    "rougeL": rouge_l_from_parts(lcs, pred_len, ref_len),
                    "rouge_lcs": lcs,
                    "rouge_pred_len": pred_len,
                    "rouge_ref_len": ref_len,
                }
            )
        return pd.DataFrame.from_records(records, columns=["rougeL", "rouge_lcs", "rouge_pred_len", "rouge_ref_len"])

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        _require(rows, ["rougeL"], self.name)
        return {"rougeL": float(np.mean(rows["rougeL"].to_numpy(dtype=float)))}

    def config(self) -> dict:
        return {**super().config(), "beta": BETA}


class MeteorMetric(Metric):
    """METEOR 1.5 (pycocoevalcap's jar); corpus score from summed sufficient statistics."""

    name = "meteor"
    columns = ("meteor",)
    headers = {"meteor": "MTR"}
    description = (
        "METEOR 1.5 (jar bundled with pycocoevalcap, -l en -norm), corpus score from summed "
        f"statistics as the jar's EVAL; {NORMALISATION}"
    )
    STAT_COLUMNS = tuple(f"meteor_{field}" for field in METEOR_STAT_FIELDS)

    class Options(OptionsModel):
        java: str = "java"  # the Java runtime that runs the jar
        memory: str = "2G"  # the jar's -Xmx
        timeout_s: float = 120.0  # limit per call to the jar

    def __init__(self, java: str = "java", memory: str = "2G", timeout_s: float = 120.0):
        self.java, self.memory, self.timeout_s = java, memory, timeout_s
        self.params = MeteorParams()

    def check(self) -> None:
        if not java_available(self.java):
            raise MetricUnavailable("METEOR 1.5 needs a Java runtime", "install one, e.g. apt-get install default-jre-headless")
        find_meteor_jar()

    def open_jar(self) -> MeteorProcess:
        """A METEOR jar process with this metric's settings (a context manager)."""
        return MeteorProcess(java=self.java, memory=self.memory, timeout_s=self.timeout_s)

    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        self.check()
        with self.open_jar() as jar:
            return self.per_sample_with(jar, references, predictions)

    def per_sample_with(
        self, jar: MeteorProcess, references: Sequence[str], predictions: Sequence[str]
    ) -> pd.DataFrame:
        """`per_sample` on an already running jar (starting one takes seconds)."""
        refs, preds = _normalised_pairs(references, predictions)
        columns = ["meteor", *self.STAT_COLUMNS]
        if not refs:
            return pd.DataFrame(columns=columns)
        stats = [jar.stats(ref, pred) for ref, pred in zip(refs, preds)]
        # The per-sample values are the jar's own (as pycocoevalcap reports them).
        scores, _ = jar.evaluate(stats)
        frame = pd.DataFrame(stats, columns=list(self.STAT_COLUMNS))
        frame.insert(0, "meteor", scores)
        return frame

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        _require(rows, self.STAT_COLUMNS, self.name)
        summed = sum_meteor_stats(rows[list(self.STAT_COLUMNS)].to_numpy(dtype=float).tolist())
        return {"meteor": meteor_from_stats(summed, self.params)}

    def config(self) -> dict:
        return {
            **super().config(),
            "jar": "meteor-1.5.jar (pycocoevalcap 1.2)",
            "command": f"java -jar -Xmx{self.memory} meteor-1.5.jar - - -stdio -l en -norm",
            "params": {"alpha": self.params.alpha, "beta": self.params.beta, "gamma": self.params.gamma,
                       "delta": self.params.delta, "module_weights": list(self.params.module_weights)},
        }
