"""`reference`: returns each sample's own reference findings. A sanity upper bound: every
metric should be at (or, for LLM judges, near) its maximum."""

from __future__ import annotations

from typing import Iterator, Sequence

from bench.data.records import Sample
from bench.systems.base import Prediction, System


class ReferenceSystem(System):
    name = "reference"
    description = "the reference findings themselves (upper bound)"

    def generate(self, samples: Sequence[Sample], ctx) -> Iterator[Prediction]:
        for s in samples:
            yield Prediction(s.id, s.findings, s.findings, {"source": "reference"})
