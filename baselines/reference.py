"""`reference`: returns each sample's own reference findings. A sanity upper bound: every
metric should be at (or, for LLM judges, near) its maximum.

It is the one system that reads the test findings, and it says so: `reads_test_findings`
lets the runner hand it `ctx.test_findings`, which every other system is refused.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from bench.data.records import Query
from bench.systems.base import Prediction, System


class ReferenceSystem(System):
    name = "reference"
    description = "the reference findings themselves (upper bound; the only system that reads them)"
    reads_test_findings = True

    def generate(self, queries: Sequence[Query], ctx) -> Iterator[Prediction]:
        for q in queries:
            yield Prediction(q.id, ctx.test_findings(q.id), {"source": "reference"})
