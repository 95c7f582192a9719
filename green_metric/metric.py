"""GREEN as a bench metric ("green" in `bench run` / `bench score`).

Options (`--metric-opt green.KEY=VALUE`):
    judge        an LLM spec (docs/llm.md), e.g. openai:http://gpu:8000/v1 serving
                 StanfordAIMI/GREEN-RadLlama2-7b, or @llm.toml[#NAME] (an endpoint file: its
                 `green` use); required: without it the metric is unavailable
    model        the model the judge serves (not needed with an endpoint file)
    prompt       a prompt template file with {reference} and {candidate}; default: the
                 prompt of the installed green_score package
    max_tokens   the longest answer (default 2048, as GREEN's own generation)
    cache        SQLite response cache (default: <cache root>/llm/responses.sqlite)
    concurrency, timeout, progress, probe   as for radfact

One request per study (the prompt as a single user message, temperature 0), through the
harness's LLM client and its response cache. A study is failed, never scored, when its
request got no answer or the answer is not in GREEN's format (green_metric.answer). The
value is the mean of the per-study GREEN scores, with study-level bootstrap intervals; the
mean counts per error category and of matched findings are reported beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
from pydantic import Field

from bench.errors import MetricUnavailable
from bench.llm.judge import check_judge, judge_client, judge_model, no_judge
from bench.llm.servers import judge_serving
from bench.metrics.base import Metric
from bench.options import OptionsModel, validate_options
from green_metric.answer import CATEGORIES, GreenFormatError, parse_answer
from green_metric.prompt import GreenPrompt, load_prompt

if TYPE_CHECKING:
    from bench.llm import ChatRequest, LLMClient

log = logging.getLogger(__name__)

USE = "green"  # this metric's name in an endpoint file's [uses] table
PREFIX = "green"
REMEDY = ("pass --metric-opt green.judge=openai:URL --metric-opt green.model=NAME, or an endpoint file "
          "(--metric-opt green.judge=@llm.toml); docs/green.md shows how to serve GREEN-RadLlama2-7b with vLLM")
SIG_COLUMNS = tuple(f"{PREFIX}_sig_{c}" for c in CATEGORIES)
INSIG_COLUMNS = tuple(f"{PREFIX}_insig_{c}" for c in CATEGORIES)
# The order of the sufficient statistics: a count of scored rows, then sums.
STAT_COLUMNS = (f"{PREFIX}_score", f"{PREFIX}_matched", *SIG_COLUMNS, *INSIG_COLUMNS)


class GreenMetric(Metric):
    name = "green"
    columns = (f"{PREFIX}_score",)
    headers = {f"{PREFIX}_score": "GREEN"}
    level = "sample"
    version = "1"
    description = ("GREEN (Ostmeier et al. 2024): an LLM judge counts clinically significant errors (a)-(f) and "
                   "matched findings between the reference and the candidate report, with GREEN's own prompt "
                   "(from the installed green_score package or a file); per study matched / (matched + significant "
                   "errors), 0 when nothing matched; the mean over studies. Answers not in GREEN's format and "
                   "requests not answered fail their study (never scored)")
    llm_option = "judge"  # `--endpoints FILE` gives it @FILE when the file's [uses] names green
    llm_use = USE

    class Options(OptionsModel):
        judge: str | None = None
        model: str | None = None
        prompt: Path | None = None
        max_tokens: int = Field(2048, ge=16)
        cache: Path | None = None
        concurrency: int = Field(16, ge=1)
        timeout: float = Field(300.0, gt=0)
        progress: bool = True
        probe: bool = True

    def __init__(self, judge: str | None = None, model: str | None = None, prompt: str | Path | None = None,
                 max_tokens: int | str = 2048, cache: str | Path | None = None, concurrency: int | str = 16,
                 timeout: float | str = 300.0, progress: bool | str = True, probe: bool | str = True, *,
                 client: "LLMClient | None" = None):
        opts = validate_options(self.Options, {
            "judge": judge, "model": model, "prompt": prompt, "max_tokens": max_tokens, "cache": cache,
            "concurrency": concurrency, "timeout": timeout, "progress": progress, "probe": probe},
            f"metric {self.name}")
        self.opts = opts
        self.judge = (opts.judge or "").strip() or None
        self.model = opts.model
        self._client = client
        self._prompt: GreenPrompt | None = None
        if client is None:
            self.model = judge_model(self.judge, self.model, USE)  # an endpoint file names it
        if client is not None and self.judge is None:
            self.judge = f"{client.backend.kind}:{client.backend.model}"

    # -- setup -------------------------------------------------------------------
    def prompt(self) -> GreenPrompt:
        if self._prompt is None:
            self._prompt = load_prompt(self.opts.prompt)
        return self._prompt

    def cache_path(self) -> Path:
        return self.opts.cache if self.opts.cache is not None else self.resolved_cache_root() / "llm" / "responses.sqlite"

    def check(self) -> None:
        """Unavailable without GREEN's prompt or a judge that answers; within seconds."""
        self.prompt()
        if self._client is None and not no_judge(self.judge):
            from bench.llm import parse_spec

            parse_spec(self.judge or "", self.model, USE)
        check_judge(self.client(), self.opts.probe)

    def client(self) -> "LLMClient":
        if self._client is None:
            self._client = judge_client(self.judge, self.model, USE, REMEDY, self.cache_path(),
                                        concurrency=self.opts.concurrency, timeout=self.opts.timeout)
        return self._client

    def request(self, reference: str, candidate: str) -> "ChatRequest":
        from bench.llm import ChatRequest

        return ChatRequest(messages=[{"role": "user", "content": self.prompt().text(reference, candidate)}],
                           temperature=0.0, max_tokens=self.opts.max_tokens)

    # -- scoring -----------------------------------------------------------------
    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        """One row per study: the score, matched findings and the 12 error counts, or
        `green_failed` True (with `green_error`) and NaN where the study could not be scored."""
        client = self.client()
        reqs = [self.request(r, p) for r, p in zip(references, predictions)]
        with judge_serving(client, self.judge):
            answers = client.chat_many(reqs, progress=self.opts.progress, description="GREEN")
        rows = [_row(a) for a in answers]
        failed = [r for r in rows if r[self.failed_column()]]
        if failed:
            log.warning("GREEN: %d of %d studies failed (first: %s); they are not scored", len(failed), len(rows),
                        failed[0][f"{PREFIX}_error"])
        if rows and len(failed) == len(rows):
            raise MetricUnavailable(f"judge {self.judge}: no study could be scored ({len(rows)} of {len(rows)} "
                                    f"failed; first: {failed[0][f'{PREFIX}_error']})",
                                    "check the judge serves a GREEN model and the prompt is GREEN's")
        return pd.DataFrame(rows, columns=[*STAT_COLUMNS, self.failed_column(), f"{PREFIX}_error"])

    # Additive: every value is a mean over scored studies (bench.stats.aggregators).
    def sufficient_statistics(self, rows: pd.DataFrame) -> np.ndarray:
        ok = ~rows[self.failed_column()].fillna(False).astype(bool).to_numpy() if self.failed_column() in rows \
            else np.ones(len(rows), dtype=bool)
        stats = np.nan_to_num(rows[list(STAT_COLUMNS)].to_numpy(dtype=float), nan=0.0) * ok[:, None]
        return np.column_stack([ok.astype(float), stats])

    def aggregate_totals(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        totals = np.asarray(totals, dtype=float)
        n = totals[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = totals[..., 1:] / n[..., None]
        return {col: np.where(n > 0, means[..., i], np.nan) for i, col in enumerate(STAT_COLUMNS)}

    def aggregate(self, rows: pd.DataFrame) -> dict[str, float]:
        return {k: float(v) for k, v in self.aggregate_totals(self.sufficient_statistics(rows).sum(0)).items()}

    def signature_settings(self) -> dict:
        return {"judge": self.model or "(unnamed)", "prompt": self.prompt().digest, "max_tokens": self.opts.max_tokens}

    def config(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "description": self.description,
                               "judge": self.judge, "model": self.model, "max_tokens": self.opts.max_tokens}
        try:
            p = self.prompt()
            out["prompt"] = {"source": p.source, "sha256_12": p.digest}
        except MetricUnavailable as e:
            out["prompt"] = {"unavailable": e.reason}
        if self._client is not None:
            out["llm"] = self._client.manifest()
        return out


def _row(resp: Any) -> dict[str, Any]:
    empty = {c: np.nan for c in STAT_COLUMNS}
    if not resp.ok:
        return {**empty, f"{PREFIX}_failed": True, f"{PREFIX}_error": f"no answer: {resp.error}"}
    try:
        a = parse_answer(resp.text)
    except GreenFormatError as e:
        return {**empty, f"{PREFIX}_failed": True, f"{PREFIX}_error": f"unexpected format: {e}"}
    return {f"{PREFIX}_score": a.score, f"{PREFIX}_matched": float(a.matched),
            **{c: float(v) for c, v in zip(SIG_COLUMNS, a.significant)},
            **{c: float(v) for c, v in zip(INSIG_COLUMNS, a.insignificant)},
            f"{PREFIX}_failed": False, f"{PREFIX}_error": None}
