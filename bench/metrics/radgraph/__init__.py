"""RGER: RadGraph F1 at reward level "partial" (metric "rger"; docs/metrics.md, RGER).

Every reference and prediction is annotated with RadGraph (entities and relations) by the
pinned radgraph package (annotator.py); the rewards are then computed by our own code from
the annotations (rewards.py), per report, and averaged. An empty reference or prediction
scores 0, as in radgraph's F1RadGraph.

Per-sample columns: rger_simple, rger_partial, rger_complete. Aggregate: "rger" (mean of
rger_partial, the leaderboard column) plus "rger_simple" and "rger_complete".
Options (`--metric-opt rger.KEY=VALUE`): see RgerMetric.Options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from pydantic import Field

from bench.errors import BenchError, MetricUnavailable
from bench.metrics.means import MeanScoresMetric
from bench.metrics.radgraph.annotator import DEFAULT_MODEL_TYPE, AnnotatorConfig, RadGraphAnnotator
from bench.metrics.radgraph.rewards import LEVELS, PINNED_VERSION, rewards
from bench.options import OptionsModel



class RgerMetric(MeanScoresMetric):
    name = "rger"
    columns = ("rger",)
    headers = {"rger": "RGER"}
    # Means of the per-sample rewards (additive: bench/metrics/means.py); the leaderboard shows partial.
    means = {"rger": "rger_partial", "rger_simple": "rger_simple", "rger_complete": "rger_complete"}

    class Options(OptionsModel):
        model_type: str = DEFAULT_MODEL_TYPE  # radgraph | radgraph-xl | modern-radgraph-xl
        model_path: str | None = None  # .tar.gz or unpacked directory; else $SAERAD_RADGRAPH_MODEL, HF cache
        python: str | None = None  # interpreter with radgraph; else $SAERAD_RADGRAPH_PYTHON, our own
        device: str = "auto"  # auto | cpu | cuda | cuda:N (in the worker process)
        cache_dir: str | None = None  # annotation cache; default <cache root>/radgraph
        hf_cache_dir: str | None = None  # Hugging Face cache; default huggingface_hub's
        chunk: int = Field(256, ge=1)  # texts per worker call; each chunk is committed to the cache
        timeout_s: float | None = None  # per chunk; None: no limit
    description = (f"RadGraph F1 (Delbrouck et al. 2022), reward level partial: entities as (tokens, label, "
                   f"has relation), set F1 per report, 0 if either side has no entities, mean over reports; "
                   f"annotations by radgraph=={PINNED_VERSION} (weights StanfordAIMI/RRG_scorers), rewards by "
                   f"our own code checked against radgraph's")

    def __init__(self, annotator: RadGraphAnnotator | None = None, **options):
        if annotator is not None and options:
            raise TypeError("pass either an annotator or annotator options, not both")
        try:
            config = AnnotatorConfig(**options)
        except TypeError as exc:
            known = ", ".join(AnnotatorConfig.__dataclass_fields__)
            raise BenchError(f"rger: {exc}; options are {known}") from None
        self.annotator = annotator or RadGraphAnnotator(config)

    def attach_cache(self, cache_root: Path | None) -> None:
        super().attach_cache(cache_root)
        if cache_root is not None and not self.annotator.config.cache_dir:
            self.annotator.cache_dir = Path(cache_root) / "radgraph"

    def check(self) -> None:
        self.annotator.resolve()

    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        if len(references) != len(predictions):
            raise ValueError(f"rger: {len(references)} references but {len(predictions)} predictions")
        annotations = self.annotator.annotate(list(references) + list(predictions))
        refs, preds = annotations[:len(references)], annotations[len(references):]
        records = [rewards(p, r).as_dict() for p, r in zip(preds, refs)]
        frame = pd.DataFrame.from_records(records, columns=list(LEVELS)) if records else \
            pd.DataFrame(columns=list(LEVELS), dtype=float)
        return frame.rename(columns=lambda level: f"rger_{level}").astype(float)

    def signature_settings(self) -> dict:
        return {"reward": "partial", "radgraph": PINNED_VERSION, "model": self.annotator.config.model_type,
                "model_sha": self.annotator.fingerprint()[:12]}

    def config(self) -> dict:
        cfg = super().config()
        annotator_cfg = self.annotator.config
        cfg.update(radgraph_version=PINNED_VERSION, model_type=annotator_cfg.model_type, device=annotator_cfg.device)
        try:
            resolved = self.annotator.resolve()
            cfg.update(model_fingerprint=resolved.fingerprint, model_archive=str(resolved.archive),
                       annotator_python=resolved.env.python, annotator_source=resolved.env.source)
        except MetricUnavailable:
            cfg.update(model_fingerprint=None)
        return cfg
