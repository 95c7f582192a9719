"""`constant`: the most common findings text of the training split, for every sample.

Texts are compared after whitespace folding and lower-casing, so trivial formatting
differences do not split a mode; the most frequent original spelling is what is emitted.
Ties go to the text seen first in split order, so the choice is deterministic.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator, Sequence

from bench.data.records import Query
from bench.systems.base import Prediction, System


def _key(text: str) -> str:
    return " ".join(text.lower().split())


class ConstantSystem(System):
    name = "constant"
    description = "the most common training findings, for every sample"
    needs_train = True

    def __init__(self, options=None):
        super().__init__(options)
        self.text: str | None = None
        self.support: int = 0
        self.n_train: int = 0

    def fit(self, ctx) -> None:
        train = ctx.dataset("train")
        if not train.samples:
            from bench.errors import DataError

            raise DataError("the training split is empty; `constant` needs training reports")
        counts: Counter[str] = Counter()
        spelling: dict[str, Counter[str]] = {}
        for s in train.samples:
            k = _key(s.findings)
            counts[k] += 1
            spelling.setdefault(k, Counter())[s.findings.strip()] += 1
        # Counter.most_common keeps insertion order among equal counts: first seen wins.
        key, self.support = counts.most_common(1)[0]
        self.text = spelling[key].most_common(1)[0][0]
        self.n_train = len(train.samples)

    def generate(self, queries: Sequence[Query], ctx) -> Iterator[Prediction]:
        assert self.text is not None, "fit() first"
        prov = {"source": "most common training findings", "support": self.support, "n_train": self.n_train}
        for q in queries:
            yield Prediction(q.id, self.text, prov)

    @classmethod
    def compute_parts(cls, manifest: dict) -> list:
        """For `bench compute`: no model, so no parameters and no FLOPs."""
        return []

    def config(self) -> dict:
        return {**super().config(), "text": self.text, "support": self.support}
