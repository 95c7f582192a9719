"""RadFact against a real model: llama-cpp-python's OpenAI-compatible server on SmolLM2-135M
(session fixture `llama_server`, tests/llm_server.py). The model is too small to judge; this
proves the plumbing: phrases come back as lists, every verdict is read or counted as a
failure, the scores are consistent with the verdicts, and a second run is all cache hits;
as a metric, check() accepts the served model and names it when another is asked for.
Skipped only when llama-cpp-python is not installed."""

from __future__ import annotations

import math

import pytest
from llm_server import llama_server  # noqa: F401 (a fixture)

from bench.errors import MetricUnavailable
from bench.llm import LLMClient, ResponseCache
from bench.llm.openai_compat import OpenAICompatBackend
from radfact.evaluate import RadFactConfig, Study, evaluate
from radfact.metric import RadFactMetric
from radfact.scores import aggregate

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

STUDIES = [Study("a", reference="No pleural effusion.", prediction="Normal heart size.")]
# One example each keeps the faithful prompt inside the fixture's 2048-token context and the
# test short; a tiny model's phrasing is cut off early.
CFG = dict(n_phrase_examples=1, n_entailment_examples=1, phrase_max_tokens=48, entailment_max_tokens=40)


def test_radfact_plumbing_on_a_real_server(llama_server, tmp_path):  # noqa: F811
    path = tmp_path / "cache.sqlite"
    for mode in ("batched", "faithful"):  # the second mode's phrasing calls are cache hits
        cfg = RadFactConfig(mode=mode, **CFG)
        client = LLMClient(OpenAICompatBackend([llama_server.url], "smollm2"), ResponseCache(path), timeout=120.0)
        results = evaluate(STUDIES, client, cfg, progress=False)
        assert client.usage.failures == 0 and client.usage.requests >= 2
        check(results)
        # The same run again is answered from the cache: no request reaches the server.
        served = llama_server.completions_served()
        again = LLMClient(OpenAICompatBackend([llama_server.url], "smollm2"), ResponseCache(path), timeout=120.0)
        evaluate(STUDIES, again, cfg, progress=False)
        assert again.usage.calls == 0 and llama_server.completions_served() == served


def test_radfact_metric_checks_and_scores_on_a_real_server(llama_server, tmp_path):  # noqa: F811
    spec = {"judge": f"openai:{llama_server.url}", "mode": "batched", "timeout": "120", "progress": "false"}
    wrong = RadFactMetric.from_options({**spec, "model": "llama3"}, cache_root=tmp_path)
    with pytest.raises(MetricUnavailable, match=r"does not serve model 'llama3' \(it serves: smollm2\)"):
        wrong.check()
    metric = RadFactMetric.from_options({**spec, "model": "smollm2"}, cache_root=tmp_path)
    metric.cfg = RadFactConfig(mode="batched", **CFG)  # short answers keep the test fast
    metric.check()
    rows = metric.per_sample([s.reference for s in STUDIES], [s.prediction for s in STUDIES])
    assert list(rows[metric.failed_column()]) == [False]  # the judge answered: nothing failed
    f = metric.failures(rows)
    assert f["of"] >= 2 and 0 <= f["failed"] <= f["of"]  # at least the two phrasings were judged
    assert (tmp_path / "llm" / "responses.sqlite").is_file()
    assert metric.config()["llm"]["usage"]["failures"] == 0


def check(results) -> None:
    for r in results:
        s = r.score
        if s.phrase_failures:
            assert s.invalid
            continue
        assert isinstance(r.prediction_phrases, list) and isinstance(r.reference_phrases, list)
        assert all(isinstance(p, str) and p for p in r.prediction_phrases + r.reference_phrases)
        assert len(r.precision_verdicts) == len(r.prediction_phrases)
        assert len(r.recall_verdicts) == len(r.reference_phrases)
        verdicts = r.precision_verdicts + r.recall_verdicts
        assert s.llm_failures == sum(v.failed for v in verdicts)
        assert all(not (v.failed and v.entailed) for v in verdicts)  # a failure is never entailed
        if not s.invalid and r.prediction_phrases:
            assert s.precision == sum(v.entailed for v in r.precision_verdicts) / len(r.prediction_phrases)
    out = aggregate([r.score for r in results])
    assert math.isnan(out["radfact_f1"]) or 0 <= out["radfact_f1"] <= 1
