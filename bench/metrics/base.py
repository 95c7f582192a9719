"""The metric interface.

A metric is computed in two steps so that the resamplers can resample studies without
re-running anything expensive (docs/metrics.md, Bootstrap):

1. `per_sample(references, predictions)` runs once and returns a DataFrame with one row per
   sample: the sample-level score(s) a reader would look at, plus whatever sufficient
   statistics the corpus-level value needs (n-gram counts for BLEU, label vectors for
   CheXbert micro-F1, ...). Column names are prefixed with the metric name.
2. `aggregate(rows)` turns any multiset of those rows (the full set, or a bootstrap
   resample with repeats) into the corpus-level values, keyed by column name
   (e.g. {"bleu4": 0.031}).

A metric also declares what the tables need to know about it, so that no table hard-codes
a metric: its leaderboard `columns` and their `headers`, whether higher is better, whether
its value is a corpus statistic or a mean of per-sample scores, and an implementation
`version` that changes whenever a change could move a number. Its options are one pydantic
model, `Options`, beside its code.

Failures are never scores. A metric that cannot run raises `MetricUnavailable` from
`check()` (before any generation) or from `per_sample`. A sample the metric could not score
(say, the LLM judge failed on it after its retries) is marked True in the boolean column
`failed_column()` of its row: the scorer leaves it out of every aggregate and counts it.
Judgements that were made but could not be read (an unparseable answer from a reachable
judge) are reported by `failures(rows)` and shown beside the value.

Scores are fractions in [0, 1]; tables multiply by 100 as papers do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import pandas as pd

from bench.options import NoOptions, OptionsModel, validate_options


class Metric(ABC):
    name: ClassVar[str]  # registry name, e.g. "bleu"
    columns: ClassVar[tuple[str, ...]]  # aggregate keys shown in tables, in table order, e.g. ("bleu4",)
    headers: ClassVar[Mapping[str, str]] = {}  # column -> display name (default: the key)
    higher_is_better: ClassVar[bool] = True
    level: ClassVar[str] = "corpus"  # "corpus": from summed statistics; "sample": mean of per-sample scores
    version: ClassVar[str] = "1"  # bump when a change could move any number
    description: ClassVar[str] = ""  # implementation and normalisation, shown in docs and manifests
    Options: ClassVar[type[OptionsModel]] = NoOptions
    # The option that takes an LLM spec (a judge, docs/llm.md) and the name the metric asks under
    # in an endpoint file's [uses] table (None: its registry name); `--endpoints FILE` fills the
    # option for a use the file names.
    llm_option: ClassVar[str | None] = None
    llm_use: ClassVar[str | None] = None

    # The run's cache root (datasets, tokens, labels, annotations, LLM answers live under it);
    # set by `from_options`. None: the default root (bench.data.default.cache_root).
    cache_root: Path | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None, cache_root: Path | None = None) -> "Metric":
        """Build from raw option strings, validated by `Options`; only options given are passed on."""
        opts = validate_options(cls.Options, options or {}, f"metric {cls.name}")
        metric = cls(**opts.model_dump(exclude_unset=True))
        metric.attach_cache(cache_root)
        return metric

    def attach_cache(self, cache_root: Path | None) -> None:
        """Use `cache_root` for this metric's caches (metrics with caches may extend this)."""
        self.cache_root = Path(cache_root) if cache_root is not None else None

    def resolved_cache_root(self) -> Path:
        if self.cache_root is not None:
            return self.cache_root
        from bench.data.default import cache_root

        return cache_root()

    def check(self) -> None:
        """Raise MetricUnavailable if this metric cannot run here (weights, java, endpoint)."""

    def per_sample_for(self, ids: Sequence[str], references: Sequence[str], predictions: Sequence[str],
                       data: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """What the scorer calls: `per_sample`, with the sample ids and the data they come from
        ({"root", "name", "fingerprint", "split", "unit"}; None for a file with its own references).
        Metrics that score against something besides the reference text (a dataset's ground-truth
        labels) override this; they raise MetricUnavailable where that something is missing."""
        return self.per_sample(references, predictions)

    @abstractmethod
    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        """One row per sample, in input order; columns prefixed with `self.name`."""

    @abstractmethod
    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        """Corpus-level values from a multiset of per-sample rows."""

    @classmethod
    def failed_column(cls) -> str:
        """Boolean per-sample column: True where the sample could not be scored."""
        return f"{cls.name}_failed"

    def failures(self, rows: pd.DataFrame) -> dict[str, Any] | None:
        """Judgements made but unreadable, {"failed": k, "of": n, "what": "..."}; None if not applicable."""
        return None

    def signature_settings(self) -> dict[str, Any]:
        """The settings that change this metric's numbers, beyond its name and version
        (tokenisation, label mapping, a short hash of the weights, the judge and its prompts...).
        Each metric declares its own; see `signature`."""
        return {}

    def signature(self) -> dict[str, str]:
        """How a number was made, in the spirit of sacreBLEU's signatures: name, implementation
        version and every setting that changes the number. Two values may be compared only when
        their signatures agree (bench.signatures)."""
        return {"metric": self.name, "version": self.version,
                **{k: str(v) for k, v in self.signature_settings().items()}}

    def config(self) -> dict:
        """Everything that determines this metric's numbers, for the run manifest."""
        return {"name": self.name, "version": self.version, "description": self.description}

    @classmethod
    def detail_table(cls) -> dict[str, Any] | None:
        """A second table of this metric's aggregate values (per-finding F1, ...), shown after the
        leaderboard: {"title": ..., "columns": [{"key", "header"}, ...]}; None (the default): none."""
        return None

    @classmethod
    def metadata(cls) -> dict[str, Any]:
        """What tables need: columns with display names, direction, level, version (and the detail table)."""
        meta = {"name": cls.name, "version": cls.version, "higher_is_better": cls.higher_is_better,
                "level": cls.level,
                "columns": [{"key": c, "header": cls.headers.get(c, c)} for c in cls.columns]}
        details = cls.detail_table()
        if details is not None:
            meta["details"] = details
        return meta
