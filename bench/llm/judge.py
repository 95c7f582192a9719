"""The LLM judge of a metric (RadFact, GREEN, ...): its spec checked, its client built, probed.

Each LLM-judged metric has a `judge` option (an LLM spec or an endpoint file, `@FILE[#NAME]`)
and a `model`; these helpers turn them into a client and into `MetricUnavailable` with a
remedy wherever the judge cannot answer, the same way for every metric. A malformed spec or
endpoint file stays a BenchError: it is the user's typo, not the machine's state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import MetricUnavailable, ModelUnavailableError

if TYPE_CHECKING:
    from bench.llm.client import LLMClient

PROBE_TIMEOUT_S = 5.0


def no_judge(judge: str | None) -> bool:
    return judge is None or judge.strip().lower() in ("", "none")


def judge_model(judge: str | None, model: str | None, use: str) -> str | None:
    """The model the judge serves: the one an endpoint file names, else `model` (the file is
    read and checked here, so its mistakes show when the metric is built)."""
    from bench.llm.endpoints import is_file_spec

    if judge is not None and is_file_spec(judge):
        from bench.llm.spec import parse_spec

        return parse_spec(judge, model, use).model
    return model


def judge_client(judge: str | None, model: str | None, use: str, remedy: str, cache_path: Path, *,
                 concurrency: int, timeout: float) -> "LLMClient":
    """A client for the judge (nothing is sent); MetricUnavailable when there is none or it
    cannot be built here (a key variable not set, a package or model file missing)."""
    from bench.llm.base import LLMUnavailable
    from bench.llm.spec import make_client

    if no_judge(judge):
        raise MetricUnavailable("no judge endpoint configured", remedy)
    assert judge is not None
    try:
        client = make_client(judge, model, cache_path, max_concurrency=concurrency, timeout=timeout, use=use)
    except LLMUnavailable as e:
        raise MetricUnavailable(f"judge {e.reason}", e.remedy) from e
    except ModelUnavailableError as e:
        raise MetricUnavailable(f"judge {judge}: {e}") from e
    if client is None:  # "none" was caught above; make_client's contract allows it
        raise MetricUnavailable("no judge endpoint configured", remedy)
    return client


def check_judge(client: "LLMClient", probe: bool) -> None:
    """MetricUnavailable unless the judge answers the probe (within seconds); nothing when
    `probe` is off (e.g. to re-score from the cache alone)."""
    if not probe:
        return
    from bench.llm.base import LLMUnavailable

    try:
        client.probe(PROBE_TIMEOUT_S)
    except LLMUnavailable as e:
        raise MetricUnavailable(f"judge {e.reason}", e.remedy) from e
