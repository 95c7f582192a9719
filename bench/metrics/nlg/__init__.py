"""NLG metrics: BLEU-4, ROUGE-L and METEOR, faithful to pycocoevalcap (see docs/metrics-nlg.md).

All three score `normalise_text(reference)` against `normalise_text(prediction)`: PTB
tokenisation as pycocoevalcap's PTBTokenizer does it, lower-cased, punctuation tokens dropped.
Each metric's `per_sample` keeps the sufficient statistics of its corpus value, so that
`aggregate` of any multiset of rows (a bootstrap resample) is the exact corpus value.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import pandas as pd
from pydantic import Field

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

# Longest text, in normalised tokens, that METEOR sends to its jar (see MeteorMetric).
DEFAULT_MAX_TOKENS = 1000

# Signature settings shared by the three text metrics: how texts are normalised.
TEXT_SIGNATURE = {"tok": "ptb-coco", "case": "lower", "punct": "drop"}

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

    # AdditiveMetric (bench.stats.aggregators): the value depends on the rows only through the
    # column sums of the n-gram statistics, so resamplers multiply counts by them.
    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        _require(rows, self._STAT_COLUMNS, self.name)
        return rows[list(self._STAT_COLUMNS)].to_numpy(dtype=float)

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        # One exact corpus formula per resample (a few microseconds each): the same numbers
        # as `aggregate`, and far cheaper than re-summing rows.
        totals = np.asarray(totals, dtype=float)
        flat = totals.reshape(-1, totals.shape[-1])
        scores = np.array([bleu_from_counts(t[0], t[1], t[2:2 + MAX_N], t[2 + MAX_N:]) for t in flat])
        return {f"bleu{n}": scores[:, n - 1].reshape(totals.shape[:-1]) for n in range(MAX_N, 0, -1)}

    def signature_settings(self) -> dict:
        return {**TEXT_SIGNATURE, "n": MAX_N, "ref": "closest", "smooth": "coco"}

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

    # AdditiveMetric: a mean is (sum of scores) / (number of samples).
    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        _require(rows, ["rougeL"], self.name)
        return np.column_stack([rows["rougeL"].to_numpy(dtype=float), np.ones(len(rows))])

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        totals = np.asarray(totals, dtype=float)
        return {"rougeL": totals[..., 0] / totals[..., 1]}

    def signature_settings(self) -> dict:
        return {**TEXT_SIGNATURE, "lcs_beta": BETA}

    def config(self) -> dict:
        return {**super().config(), "beta": BETA}


class MeteorMetric(Metric):
    """METEOR 1.5 (pycocoevalcap's jar); corpus score from summed sufficient statistics."""

    name = "meteor"
    columns = ("meteor",)
    headers = {"meteor": "MTR"}
    # 2: texts over `max_tokens` are truncated; a sample the jar fails on is marked failed.
    version = "2"
    description = (
        "METEOR 1.5 (jar bundled with pycocoevalcap, -l en -norm), corpus score from summed "
        f"statistics as the jar's EVAL; {NORMALISATION}; texts longer than max_tokens "
        f"(default {DEFAULT_MAX_TOKENS}) normalised tokens are truncated to their first max_tokens "
        "tokens (counted in meteor_truncated); a sample the jar fails on is marked meteor_failed"
    )
    STAT_COLUMNS = tuple(f"meteor_{field}" for field in METEOR_STAT_FIELDS)
    TRUNCATED_COLUMN = "meteor_truncated"

    class Options(OptionsModel):
        java: str = "java"  # the Java runtime that runs the jar
        memory: str = "2G"  # the jar's -Xmx
        timeout_s: float = 120.0  # limit per call to the jar
        # Longest text (normalised tokens) sent to the jar; longer ones are truncated, counted.
        max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1)

    def __init__(
        self, java: str = "java", memory: str = "2G", timeout_s: float = 120.0, max_tokens: int = DEFAULT_MAX_TOKENS
    ):
        self.java, self.memory, self.timeout_s, self.max_tokens = java, memory, timeout_s, max_tokens
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

    def _truncate(self, text: str) -> tuple[str, bool]:
        # Normalised text is tokens joined by single spaces, so a split on " " counts tokens.
        # The jar's alignment search grows much faster than linearly with length, and a
        # runaway generation (thousands of repeated words) could otherwise hold it for minutes
        # or exhaust its heap; real reports are a few hundred tokens at most.
        tokens = text.split(" ")
        if len(tokens) <= self.max_tokens:
            return text, False
        return " ".join(tokens[: self.max_tokens]), True

    def _sample_stats(self, jar: MeteorProcess, index: int, reference: str, prediction: str) -> list[float] | None:
        """One sample's statistics, or None if the jar failed on it (the jar is then restarted)."""
        try:
            return jar.stats(reference, prediction)
        except MetricUnavailable:
            raise
        except BenchError as exc:
            log.warning("METEOR: sample %d failed (%s); restarting the jar and marking the sample failed", index, exc)
        jar.restart()
        # A jar that fails on a harmless line is broken, not upset by one sample: then the
        # metric is unavailable rather than every sample failing one restart at a time.
        try:
            jar.stats("no acute findings", "no acute findings")
        except BenchError as exc:
            raise MetricUnavailable(
                f"the METEOR jar fails even on a trivial sample after a restart ({exc})",
                "check the Java runtime and the memory option (meteor.memory)",
            ) from exc
        return None

    def per_sample_with(
        self, jar: MeteorProcess, references: Sequence[str], predictions: Sequence[str]
    ) -> pd.DataFrame:
        """`per_sample` on an already running jar (starting one takes seconds)."""
        refs, preds = _normalised_pairs(references, predictions)
        columns = ["meteor", *self.STAT_COLUMNS, self.TRUNCATED_COLUMN, self.failed_column()]
        if not refs:
            return pd.DataFrame(columns=columns)
        stats: list[list[float]] = []
        truncated: list[bool] = []
        failed: list[bool] = []
        for i, (ref, pred) in enumerate(zip(refs, preds)):
            ref, ref_cut = self._truncate(ref)
            pred, pred_cut = self._truncate(pred)
            truncated.append(ref_cut or pred_cut)
            row = self._sample_stats(jar, i, ref, pred)
            failed.append(row is None)
            # Zero statistics add nothing to a sum, so a failed row that reached `aggregate`
            # anyway would not move the corpus value (the scorer leaves it out in any case).
            stats.append(row if row is not None else [0.0] * len(METEOR_STAT_FIELDS))
        if sum(truncated):
            log.warning("METEOR: %d of %d samples truncated to %d tokens", sum(truncated), len(refs), self.max_tokens)
        # The per-sample values are the jar's own (as pycocoevalcap reports them); a failed
        # sample has no score (NaN), never a made-up one.
        scored = [row for row, f in zip(stats, failed) if not f]
        jar_scores = iter(jar.evaluate(scored)[0] if scored else [])
        scores = [float("nan") if f else next(jar_scores) for f in failed]
        frame = pd.DataFrame(stats, columns=list(self.STAT_COLUMNS))
        frame.insert(0, "meteor", scores)
        frame[self.TRUNCATED_COLUMN] = truncated
        frame[self.failed_column()] = failed
        return frame

    def failures(self, rows: pd.DataFrame) -> dict[str, Any] | None:
        """Truncated samples (scored, but on their first `max_tokens` tokens), if any."""
        if self.TRUNCATED_COLUMN not in rows.columns:
            return None
        n = int(rows[self.TRUNCATED_COLUMN].fillna(False).astype(bool).sum())
        if n == 0:
            return None
        return {"failed": n, "of": len(rows), "what": f"samples truncated to {self.max_tokens} tokens for METEOR"}

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        _require(rows, self.STAT_COLUMNS, self.name)
        summed = sum_meteor_stats(rows[list(self.STAT_COLUMNS)].to_numpy(dtype=float).tolist())
        return {"meteor": meteor_from_stats(summed, self.params)}

    # AdditiveMetric: the corpus score is a function of summed statistics, where a perfectly
    # matched sample adds no chunk (as the jar's EVAL sums them, see sum_meteor_stats).
    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        _require(rows, self.STAT_COLUMNS, self.name)
        values = rows[list(self.STAT_COLUMNS)].to_numpy(dtype=float)
        return np.array([sum_meteor_stats([row]) for row in values.tolist()]).reshape(values.shape)

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        totals = np.asarray(totals, dtype=float)
        flat = totals.reshape(-1, totals.shape[-1])
        return {"meteor": np.array([meteor_from_stats(t, self.params) for t in flat]).reshape(totals.shape[:-1])}

    def signature_settings(self) -> dict:
        return {**TEXT_SIGNATURE, "jar": "meteor-1.5", "lang": "en", "norm": "yes", "max_tokens": self.max_tokens}

    def config(self) -> dict:
        return {
            **super().config(),
            "jar": "meteor-1.5.jar (pycocoevalcap 1.2)",
            "command": f"java -jar -Xmx{self.memory} meteor-1.5.jar - - -stdio -l en -norm",
            "max_tokens": self.max_tokens,
            "params": {"alpha": self.params.alpha, "beta": self.params.beta, "gamma": self.params.gamma,
                       "delta": self.params.delta, "module_weights": list(self.params.module_weights)},
        }
