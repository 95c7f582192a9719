"""RadFact as a bench metric ("radfact" in `bench run` / `bench score`).

Options (`--metric-opt radfact.KEY=VALUE`):
    judge      an LLM spec as in docs/llm.md, e.g. openai:http://gpu:8000/v1 (several
               comma-separated URLs share the load); required: without it the metric is
               unavailable (offline default)
    model      the model the judge serves, e.g. meta-llama/Meta-Llama-3-70B-Instruct
    mode       faithful (default; one call per phrase, as the reference) | batched
    cache      SQLite response cache (default: <bench cache>/llm/responses.sqlite)
    concurrency  requests in flight (default 16)
    phrase_examples, entailment_examples  few-shot files (ours or microsoft/RadFact's)
    n_phrase_examples, n_entailment_examples  keep only the first n examples
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.errors import BenchError, MetricUnavailable
from bench.metrics.base import Metric
from bench.metrics.registry import register_metric
from radfact.evaluate import RadFactConfig, Study, evaluate
from radfact.scores import COLUMNS, aggregate_totals, sufficient_statistics

log = logging.getLogger(__name__)

REMEDY = ("pass --metric-opt radfact.judge=openai:URL --metric-opt radfact.model=NAME "
          "(see docs/radfact.md for serving Llama-3-70B-Instruct with vLLM)")


def _int_or_none(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise BenchError(f"radfact {name} must be a whole number, got {value!r}") from None


@register_metric("radfact")
class RadFactMetric(Metric):
    name = "radfact"
    columns = COLUMNS
    description = ("RadFact (Bannur et al. 2024): LLM report->phrases, then entailment of each candidate phrase "
                   "against the reference phrases (logical precision) and of each reference phrase against the "
                   "candidate phrases (logical recall); per-study fractions, NaN-aware means over studies, "
                   "F1 of the two means; unparseable answers not entailed; studies with unmatched evidence dropped")

    def __init__(self, judge: str | None = None, model: str | None = None, mode: str = "faithful",
                 cache: str | Path | None = None, concurrency: int | str = 16,
                 phrase_examples: str | Path | None = None, entailment_examples: str | Path | None = None,
                 n_phrase_examples: int | str | None = None, n_entailment_examples: int | str | None = None,
                 timeout: float | str = 300.0, progress: bool | str = True):
        self.judge = (judge or "").strip() or None
        self.model = model or None
        self.cache = Path(cache) if cache else None
        self.concurrency = _int_or_none("concurrency", concurrency) or 16
        self.timeout = float(timeout)
        self.progress = str(progress).lower() not in ("0", "false", "no")
        self.cfg = RadFactConfig(mode=str(mode), phrase_examples=Path(phrase_examples) if phrase_examples else None,
                                 entailment_examples=Path(entailment_examples) if entailment_examples else None,
                                 n_phrase_examples=_int_or_none("n_phrase_examples", n_phrase_examples),
                                 n_entailment_examples=_int_or_none("n_entailment_examples", n_entailment_examples))
        self._client = None

    def check(self) -> None:
        if self.judge is None or self.judge.lower() == "none":
            raise MetricUnavailable("no judge endpoint configured", REMEDY)
        from bench.llm import parse_spec

        parse_spec(self.judge, self.model)  # a malformed spec is the user's error: say so now

    def client(self):
        if self._client is None:
            from bench.data.default import cache_root
            from bench.llm import make_client

            self.check()
            path = self.cache or cache_root() / "llm" / "responses.sqlite"
            self._client = make_client(self.judge, self.model, path, max_concurrency=self.concurrency,  # type: ignore[arg-type]
                                       timeout=self.timeout)
        return self._client

    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        studies = [Study(str(i), reference=r, prediction=p) for i, (r, p) in enumerate(zip(references, predictions))]
        results = evaluate(studies, self.client(), self.cfg, progress=self.progress)
        return pd.DataFrame([r.score.row() for r in results])

    # AdditiveMetric: the bootstrap resamples sums of these rows (bench.stats.aggregators).
    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        return sufficient_statistics(rows.to_dict("records"))

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        return aggregate_totals(totals)

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        return {k: float(v) for k, v in aggregate_totals(self.sufficient_statistics(rows).sum(0)).items()}

    def config(self) -> dict:
        out = {"name": self.name, "description": self.description, "judge": self.judge, "model": self.model,
               **self.cfg.describe()}
        if self._client is not None:
            out["llm"] = self._client.manifest()
        return out
