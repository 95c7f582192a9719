"""Failures are never scores: RadFact against a judge that is down, misconfigured or
answering nonsense (the scripted server of tests/llm_server.py), as a metric and as the
`bench radfact` command.

- check() names an unreachable judge, a rejected key and an unknown model within seconds;
- a study whose requests get no answer after the retries is failed (radfact_failed) with
  neutral statistics, and the others score exactly as a run on them alone;
- a judge that answers nothing at all makes the metric unavailable;
- answers that cannot be parsed are scored as not entailed and counted by failures();
- failed requests are not cached: a run against the judge once it is back asks again.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from llm_server import FaultServer, Reply, completion, free_port
from test_radfact_pipeline import STUDIES, scripted_answer

from bench.errors import BenchError, MetricUnavailable
from bench.llm import LLMClient, ResponseCache
from bench.llm.openai_compat import OpenAICompatBackend
from radfact.cli import run_radfact
from radfact.metric import RadFactMetric

REPO = Path(__file__).resolve().parents[1]
GOOD = [(s.reference or "", s.prediction or "") for s in STUDIES]  # P 13/18, R 5/8, F1 65/97 (pipeline tests)
# FLAKY: the report's phrasing request fails; DOWN: phrasing works, entailment fails.
FLAKY = ("Heart is normal.", "FLAKY heart.")
DOWN = ("Lungs are clear.", "DOWN lungs.")
MIXED = [GOOD[0], FLAKY, GOOD[1], GOOD[2], DOWN, GOOD[3], GOOD[4]]
FAILED_AT = [False, True, False, False, True, False, False]


def flaky_judge(body: dict, n: int) -> Reply:
    last = body["messages"][-1]["content"]
    if "FLAKY" in last or ("DOWN" in last and not last.startswith("Report:")):
        return Reply(status=500, body={"error": "CUDA out of memory"})
    return completion(scripted_answer(body["messages"]))


def judge(body: dict, n: int) -> Reply:
    return completion(scripted_answer(body["messages"]))


def fast_client(url: str, cache: Path | None = None) -> LLMClient:
    """Two retries with millisecond backoff: a failure is final in a few milliseconds."""
    return LLMClient(OpenAICompatBackend([url], "judge"), ResponseCache(cache), max_retries=2, timeout=5.0,
                     backoff_base_s=0.001, backoff_max_s=0.002, jitter_seed=0)


def metric_for(url: str, mode: str = "faithful", cache: Path | None = None) -> RadFactMetric:
    return RadFactMetric(mode=mode, progress=False, client=fast_client(url, cache))


def run(metric: RadFactMetric, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    metric.check()
    return metric.per_sample([r for r, _ in pairs], [p for _, p in pairs])


# -- check(): before anything is generated ---------------------------------------------

def test_refused_connection_is_unavailable_within_seconds(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    metric = RadFactMetric.from_options({"judge": f"openai:{url}", "model": "judge"}, cache_root=tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(MetricUnavailable) as exc:
        metric.check()
    assert time.perf_counter() - t0 < 3.0
    assert exc.value.reason == f"judge {url} refused the connection"
    assert exc.value.remedy


def test_unknown_host_is_unavailable(tmp_path):
    metric = RadFactMetric.from_options({"judge": "openai:http://judge-host.invalid:8000/v1", "model": "judge"},
                                        cache_root=tmp_path)
    with pytest.raises(MetricUnavailable, match=r"judge http://judge-host.invalid:8000/v1: the host "
                                                 r"'judge-host.invalid' could not be resolved"):
        metric.check()


def test_model_the_server_does_not_serve_is_unavailable(tmp_path):
    with FaultServer(judge, models=["meta-llama/Meta-Llama-3-70B-Instruct"]) as srv:
        metric = RadFactMetric.from_options({"judge": f"openai:{srv.url}", "model": "llama3"}, cache_root=tmp_path)
        with pytest.raises(MetricUnavailable) as exc:
            metric.check()
    assert exc.value.reason == (f"judge {srv.url} does not serve model 'llama3' "
                                "(it serves: meta-llama/Meta-Llama-3-70B-Instruct)")
    assert srv.total_hits == 0


def test_a_404_for_the_model_name_is_unavailable_naming_the_model(tmp_path):
    def not_found(body: dict, n: int) -> Reply:
        return Reply(status=404, body={"message": f"The model `{body['model']}` does not exist.", "code": 404})

    with FaultServer(not_found) as srv:  # lists no models: the probe asks one 1-token completion
        metric = RadFactMetric.from_options({"judge": f"openai:{srv.url}", "model": "llama3"}, cache_root=tmp_path)
        with pytest.raises(MetricUnavailable, match=r"does not serve model 'llama3' \(HTTP 404 .*`llama3` does not"):
            metric.check()
    assert srv.total_hits == 1


@pytest.mark.parametrize("status", [401, 403])
def test_a_rejected_key_is_unavailable(tmp_path, status):
    denied = Reply(status=status, body={"error": {"message": "invalid api key"}})
    with FaultServer(lambda body, n: denied, get_script=lambda path: denied) as srv:
        metric = RadFactMetric.from_options({"judge": f"openai:{srv.url}", "model": "judge"}, cache_root=tmp_path)
        with pytest.raises(MetricUnavailable) as exc:
            metric.check()
    assert exc.value.reason.startswith(f"judge {srv.url} rejected the request: HTTP {status}: ")
    assert "OPENAI_API_KEY" in exc.value.remedy


def test_a_malformed_spec_is_the_users_error_not_unavailability(tmp_path):
    metric = RadFactMetric.from_options({"judge": "openai:localhost:8000", "model": "judge"}, cache_root=tmp_path)
    with pytest.raises(BenchError, match="not an http") as exc:
        metric.check()
    assert not isinstance(exc.value, MetricUnavailable)


def test_missing_anthropic_key_is_unavailable(tmp_path, monkeypatch):
    pytest.importorskip("anthropic")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    metric = RadFactMetric.from_options({"judge": "anthropic", "model": "claude-x"}, cache_root=tmp_path)
    with pytest.raises(MetricUnavailable, match="ANTHROPIC_API_KEY is not set"):
        metric.check()


def test_probe_false_skips_the_check(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    RadFactMetric.from_options({"judge": f"openai:{url}", "model": "judge", "probe": "false"},
                               cache_root=tmp_path).check()


# -- options and the cache path -----------------------------------------------------------

def test_options_are_typed_and_say_what_was_expected():
    with pytest.raises(BenchError, match=r"mode='fast': Input should be 'faithful' or 'batched'"):
        RadFactMetric.from_options({"mode": "fast"})
    with pytest.raises(BenchError, match=r"concurrency='0': Input should be greater than or equal to 1"):
        RadFactMetric.from_options({"concurrency": "0"})
    with pytest.raises(BenchError, match=r"timeout='0': Input should be greater than 0"):
        RadFactMetric.from_options({"timeout": "0"})
    with pytest.raises(BenchError, match=r"unknown option\(s\) judges; valid options: cache, concurrency"):
        RadFactMetric.from_options({"judges": "x"})
    m = RadFactMetric(concurrency="4", progress="no", n_phrase_examples="2", timeout="1.5")  # keyword arguments
    assert (m.concurrency, m.progress, m.cfg.n_phrase_examples, m.timeout) == (4, False, 2, 1.5)
    assert RadFactMetric.metadata()["columns"] == [{"key": "radfact_f1", "header": "RadFact F1"}]
    assert RadFactMetric.failed_column() == "radfact_failed"


def test_response_cache_lives_under_the_runs_cache_root(tmp_path):
    spec = {"judge": "openai:http://127.0.0.1:9/v1", "model": "judge"}
    m = RadFactMetric.from_options(spec, cache_root=tmp_path / "root")
    assert m.client().cache.path == tmp_path / "root" / "llm" / "responses.sqlite"
    m = RadFactMetric.from_options({**spec, "cache": str(tmp_path / "mine.sqlite")}, cache_root=tmp_path / "root")
    assert m.client().cache.path == tmp_path / "mine.sqlite"


# -- per_sample: failed studies --------------------------------------------------------------

@pytest.mark.parametrize("mode", ["faithful", "batched"])
def test_studies_the_judge_did_not_answer_are_failed_and_the_rest_scored(mode):
    with FaultServer(flaky_judge, models=["judge"]) as srv:
        metric = metric_for(srv.url, mode)
        rows = run(metric, MIXED)
        assert srv.hits["Report:\nFLAKY heart."] == 3  # one attempt and two retries, then given up
        alone = run(metric_for(srv.url, mode), [p for p, f in zip(MIXED, FAILED_AT) if not f])
    failed = rows[metric.failed_column()]
    assert failed.dtype == bool and list(failed) == FAILED_AT
    # A failed row is neutral: no score, no counts, not an "invalid" study.
    for _, row in rows[failed].iterrows():
        assert math.isnan(row["radfact_precision"]) and math.isnan(row["radfact_recall"])
        assert not row["radfact_precision_valid"] and not row["radfact_recall_valid"] and not row["radfact_invalid"]
        assert row["radfact_n_candidate"] == row["radfact_llm_failures"] == row["radfact_judgements"] == 0
    scored = rows[~failed].reset_index(drop=True)
    expected = metric.aggregate(alone)
    assert expected["radfact_f1"] == pytest.approx(65 / 97)
    assert metric.aggregate(scored) == expected  # the scored rows are the studies alone, exactly
    assert metric.aggregate(rows) == expected  # and the failed rows move nothing even if kept
    pd.testing.assert_frame_equal(scored, alone)
    assert metric.failures(rows) == metric.failures(alone) == {"failed": 1, "of": 23,
                                                                "what": "judge answers that could not be parsed"}
    np.testing.assert_array_equal(metric.sufficient_statistics(rows[failed]), 0)


def test_the_harness_scorer_leaves_failed_studies_out():
    from bench.stages.score import score

    refs, preds = [r for r, _ in MIXED], [p for _, p in MIXED]
    with FaultServer(flaky_judge, models=["judge"]) as srv:
        metric = metric_for(srv.url, "batched")
        metric.check()
        res = score([f"s{i}" for i in range(len(MIXED))], refs, preds, [metric], n_bootstrap=50)
    m = res.metrics["radfact"]
    assert m["status"] == "ok" and m["n_failed_samples"] == 2 and m["n_scored"] == 5
    assert m["values"]["radfact_f1"]["value"] == pytest.approx(65 / 97)
    assert m["failures"]["failed"] == 1 and m["failures"]["of"] == 23


def test_a_judge_that_answers_nothing_makes_the_metric_unavailable():
    down = Reply(status=503, body={"error": "overloaded"})
    with FaultServer(lambda body, n: down, models=["judge"]) as srv:
        metric = metric_for(srv.url)
        metric.check()  # the listing answers; the completions do not
        with pytest.raises(MetricUnavailable) as exc:
            metric.per_sample([r for r, _ in GOOD], [p for _, p in GOOD])
    assert "answered no study (5 of 5 failed; first error: gave up after 3 attempts" in exc.value.reason
    assert "HTTP 503" in exc.value.reason


def test_unparseable_answers_are_not_entailed_and_counted():
    def babbling(body: dict, n: int) -> Reply:
        last = body["messages"][-1]["content"]
        if "GIBBERISH" in last and last.startswith("Report:"):
            return completion("I would rather not split this report.")
        if "NONSENSE" in last and not last.startswith("Report:"):
            return completion("lorem ipsum dolor sit amet")
        return completion(scripted_answer(body["messages"]))

    pairs = [("Heart is normal.", "NONSENSE one. Heart is normal."),  # 2 of 3 verdicts unreadable
             ("Lungs are clear.", "GIBBERISH")]  # the prediction cannot be phrased: invalid study
    with FaultServer(babbling, models=["judge"]) as srv:
        metric = metric_for(srv.url)
        rows = run(metric, pairs)
    assert not rows["radfact_failed"].any()  # the judge answered: nothing failed
    first = rows.iloc[0]
    assert (first["radfact_precision"], first["radfact_recall"]) == (0.5, 0.0)  # unreadable = not entailed
    assert (first["radfact_llm_failures"], first["radfact_judgements"]) == (2, 5)  # 2 phrasings + 3 verdicts
    assert rows.iloc[1]["radfact_invalid"] and rows.iloc[1]["radfact_phrase_failures"] == 1
    assert metric.failures(rows) == {"failed": 3, "of": 7, "what": "judge answers that could not be parsed"}
    values = metric.aggregate(rows)
    assert (values["radfact_precision"], values["radfact_recall"], values["radfact_f1"]) == (0.5, 0.0, 0.0)


def test_failed_requests_are_not_cached_and_a_rerun_asks_again(tmp_path):
    cache = tmp_path / "responses.sqlite"
    with FaultServer(flaky_judge, models=["judge"]) as down:
        first = run(metric_for(down.url, cache=cache), MIXED)
    assert list(first["radfact_failed"]) == FAILED_AT
    stored = _stored_requests(cache)
    assert stored and not any("FLAKY" in r or ("DOWN" in r and "Report:" not in r) for r in stored)

    with FaultServer(judge, models=["judge"]) as up:
        metric = metric_for(up.url, cache=cache)
        again = run(metric, MIXED)
    # Only what failed is asked again: the FLAKY report's phrasing, then both studies'
    # entailment (faithful: one request per phrase and direction).
    assert up.hits["Report:\nFLAKY heart."] == 1
    assert up.total_hits == 1 + 2 + 2
    assert metric.client().usage.calls == 5
    assert not again["radfact_failed"].any()
    assert again["radfact_judgements"].sum() > first["radfact_judgements"].sum()


def _stored_requests(path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return [json.loads(r)["messages"][-1]["content"] for (r,) in db.execute("SELECT request FROM responses")]


# -- the command ------------------------------------------------------------------------

def _predictions(tmp_path: Path, pairs: list[tuple[str, str]]) -> Path:
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "reference": r, "prediction": p}) + "\n"
                            for i, (r, p) in enumerate(pairs)))
    return path


def test_command_with_a_dead_judge_is_a_one_line_error_with_exit_code_2(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = subprocess.run([sys.executable, "-m", "radfact.cli", "--predictions", str(_predictions(tmp_path, GOOD)),
                           "--judge", f"openai:{url}", "--model", "judge", "--cache-dir", str(tmp_path / "c")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: judge {url} refused the connection (start the server or fix the URL)"]
    assert proc.stdout == ""


def test_command_counts_failed_studies_and_scores_the_rest(tmp_path):
    preds = _predictions(tmp_path, MIXED)
    with FaultServer(flaky_judge, models=["judge"]) as srv:
        summary = run_radfact(preds, f"openai:{srv.url}", "judge", cache_dir=tmp_path / "c", bootstrap=50,
                              progress=False, client=fast_client(srv.url, tmp_path / "c" / "llm" / "x.sqlite"))
    assert summary["n_failed"] == 2 and summary["failed_ids"] == ["s1", "s4"] and summary["n_scored"] == 5
    assert "HTTP 500" in summary["first_failure"]
    assert summary["values"]["radfact_f1"] == pytest.approx(65 / 97)
    lo, hi = summary["intervals"]["radfact_f1"]["low"], summary["intervals"]["radfact_f1"]["high"]
    assert lo <= 65 / 97 <= hi
    assert summary["failures"] == {"failed": 1, "of": 23, "what": "judge answers that could not be parsed"}


def test_command_cache_defaults_to_the_cache_dir(tmp_path):
    preds = _predictions(tmp_path, GOOD[:2])
    with FaultServer(judge, models=["judge"]) as srv:
        summary = run_radfact(preds, f"openai:{srv.url}", "judge", cache_dir=tmp_path / "root", bootstrap=0,
                              progress=False)
        assert summary["llm"]["cache"]["path"] == str(tmp_path / "root" / "llm" / "responses.sqlite")
        assert (tmp_path / "root" / "llm" / "responses.sqlite").is_file()
        hits = srv.total_hits
        again = run_radfact(preds, f"openai:{srv.url}", "judge", cache_dir=tmp_path / "root", bootstrap=0,
                            progress=False)
        assert srv.total_hits == hits and again["llm"]["usage"]["calls"] == 0
        none = run_radfact(preds, f"openai:{srv.url}", "judge", cache=None, bootstrap=0, progress=False)
        assert none["llm"]["cache"]["mode"] == "off" and srv.total_hits > hits


def test_command_with_a_judge_that_answers_nothing_is_unavailable(tmp_path):
    down = Reply(status=500, body="boom")
    with FaultServer(lambda body, n: down, models=["judge"]) as srv:
        with pytest.raises(MetricUnavailable, match="answered no study"):
            run_radfact(_predictions(tmp_path, GOOD), f"openai:{srv.url}", "judge", bootstrap=0, progress=False,
                        client=fast_client(srv.url))
