"""BLEU-1..4 as pycocoevalcap's `Bleu(4)` computes it, from per-sample n-gram statistics.

pycocoevalcap (the scorer of the MS-COCO caption evaluation, after David Chiang's bleu_scorer)
uses, for a single reference per sample:

* clipped n-gram matches `correct_n` and candidate n-gram counts `guess_n = max(0, len - n + 1)`;
* corpus precision p_n = (sum correct_n + 1e-15) / (sum guess_n + 1e-9), BLEU-N the geometric
  mean of p_1..p_N, computed as a running product raised to 1/N;
* brevity penalty exp(1 - r/c) when c < r, with ratio (c + 1e-15) / (r + 1e-9), where c is the
  summed candidate length and r the summed "closest" reference length (with one reference,
  simply its length);
* the per-sample value is the same formula on the sample's own statistics.

Everything the corpus value needs is a sum of integers per sample, so aggregating any multiset
of per-sample rows (a bootstrap resample) gives the exact corpus BLEU of that multiset.
The operations below follow the reference's order of floating-point operations, so values
agree to the last bit or two.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

MAX_N = 4
_TINY = 1e-15  # added to match counts so that zero matches give a tiny, not zero, precision
_SMALL = 1e-9  # added to denominators to avoid division by zero


@dataclass(frozen=True)
class BleuStats:
    """Sufficient statistics of one candidate against its single reference."""

    testlen: int
    reflen: int
    guess: tuple[int, ...]  # candidate n-grams, n = 1..MAX_N
    correct: tuple[int, ...]  # clipped matching n-grams, n = 1..MAX_N


def _ngram_counts(tokens: Sequence[str], max_n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))


def bleu_stats(reference: str, prediction: str, max_n: int = MAX_N) -> BleuStats:
    """Statistics of one normalised prediction against one normalised reference.

    Both are split on any whitespace, as pycocoevalcap's BLEU does.
    """
    ref_tokens, test_tokens = reference.split(), prediction.split()
    ref_counts = _ngram_counts(ref_tokens, max_n)
    correct = [0] * max_n
    for ngram, count in _ngram_counts(test_tokens, max_n).items():
        correct[len(ngram) - 1] += min(ref_counts.get(ngram, 0), count)
    guess = tuple(max(0, len(test_tokens) - k + 1) for k in range(1, max_n + 1))
    return BleuStats(len(test_tokens), len(ref_tokens), guess, tuple(correct))


def bleu_from_counts(
    testlen: float, reflen: float, guess: Sequence[float], correct: Sequence[float]
) -> list[float]:
    """BLEU-1..N from (summed) statistics; the same formula serves one sample and a corpus."""
    scores = []
    running = 1.0
    for k in range(len(guess)):
        running *= float(correct[k] + _TINY) / (guess[k] + _SMALL)
        scores.append(running ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores
