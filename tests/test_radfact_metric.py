"""RadFact as a bench metric and as a command, against a scripted OpenAI-compatible judge
(tests/llm_server.py FaultServer answering with test_radfact_pipeline.scripted_answer):
availability, hand-computed values through the harness scorer (bench.stages.score) with
bootstrap intervals and failure counts, the additive bootstrap path, and a run killed
mid-way and resumed without repeating a call. Failure semantics: test_radfact_failures.py."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from llm_server import FaultServer, completion
from test_radfact_pipeline import STUDIES, scripted_answer

from bench.errors import MetricUnavailable
from bench.stats.bootstrap import bootstrap_distribution
from radfact.cli import run_radfact
from radfact.metric import RadFactMetric

REPO = Path(__file__).resolve().parents[1]


def judge(body: dict, n: int):
    return completion(scripted_answer(body["messages"]))


def test_unavailable_without_a_judge():
    with pytest.raises(MetricUnavailable) as exc:
        RadFactMetric().check()
    assert "no judge" in exc.value.reason and "radfact.judge=openai:URL" in exc.value.remedy
    with pytest.raises(MetricUnavailable):
        RadFactMetric(judge="none").check()


def test_scoring_through_bench_gives_hand_computed_values(tmp_path):
    from bench.stages.score import score

    refs = [s.reference or "" for s in STUDIES]
    preds = [s.prediction or "" for s in STUDIES]
    with FaultServer(judge, models=["judge"]) as server:
        res = score([s.id for s in STUDIES], refs, preds, ["radfact"], n_bootstrap=200,
                    metric_options={"radfact": {"judge": f"openai:{server.url}", "model": "judge",
                                                "mode": "batched", "cache": str(tmp_path / "c.sqlite"),
                                                "progress": "false"}}, cache_root=tmp_path)
    m = res.metrics["radfact"]
    assert m["status"] == "ok"
    assert m["values"]["radfact_f1"]["value"] == pytest.approx(65 / 97)
    assert m["values"]["radfact_precision"]["value"] == pytest.approx(13 / 18)
    assert m["values"]["radfact_invalid_studies"]["value"] == 1
    lo, hi = m["values"]["radfact_f1"]["low"], m["values"]["radfact_f1"]["high"]
    assert 0 <= lo <= 65 / 97 <= hi <= 1
    assert m["config"]["llm"]["usage"]["calls"] == 15  # 8 phrasing + 7 batched entailment calls
    assert list(res.rows["radfact_precision_valid"]) == [True, True, False, False, True]
    # The leaderboard shows F1 only; one unreadable verdict (GARBLE) of 23 judge answers
    # (9 report phrasings, s5's two identical reports sharing a call, + 14 verdicts), and no
    # failed study.
    assert m["metadata"]["columns"] == [{"key": "radfact_f1", "header": "RadFact F1"}]
    assert m["failures"] == {"failed": 1, "of": 23, "what": "judge answers that could not be parsed"}
    assert m["n_failed_samples"] == 0 and not res.rows["radfact_failed"].any()
    assert server.gets["/v1/models"] == 1  # check() probed the judge once, with no chat request


def test_additive_bootstrap_equals_the_generic_path(tmp_path):
    import pandas as pd

    from radfact.scores import StudyScore

    rng = np.random.default_rng(1)
    rows = pd.DataFrame([StudyScore(int(rng.integers(0, n + 1)), int(n), int(rng.integers(0, m + 1)), int(m),
                                    invalid=bool(rng.random() < 0.1)).row()
                         for n, m in rng.integers(0, 4, (25, 2))])
    metric = RadFactMetric()
    fast = bootstrap_distribution(metric, rows, n_resamples=50, seed=3)
    slow = bootstrap_distribution(lambda r: metric.aggregate(r), rows, n_resamples=50, seed=3)
    for k in ("radfact_f1", "radfact_precision", "radfact_recall"):
        np.testing.assert_allclose(fast[k], slow[k], equal_nan=True)


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def test_killed_run_resumes_without_repeating_a_paid_call(tmp_path):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": s.id, "reference": s.reference, "prediction": s.prediction}) + "\n"
                             for s in STUDIES))
    cache = tmp_path / "cache.sqlite"

    def slow_judge(body: dict, n: int):
        reply = judge(body, n)
        reply.delay = 0.15
        return reply

    with FaultServer(slow_judge, models=["judge"]) as server:
        cmd = [sys.executable, "-m", "radfact.cli", "--predictions", str(preds), "--judge", f"openai:{server.url}",
               "--model", "judge", "--cache", str(cache), "--concurrency", "1", "--bootstrap", "0", "--json"]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while server.total_hits < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)  # let the request the killed process left in flight finish on the server
        kept = _rows(cache)
        first_hits = server.total_hits
        assert 5 <= kept < 21, "the run finished before it could be killed"
        summary = run_radfact(preds, f"openai:{server.url}", "judge", cache=cache, concurrency=1, bootstrap=0,
                              progress=False)
        # 21 distinct requests in all (8 phrasing + 13 faithful entailment); the resumed run
        # asks the server only for those the cache does not hold.
        assert server.total_hits - first_hits == 21 - kept
        assert summary["llm"]["usage"]["calls"] == 21 - kept
    assert summary["values"]["radfact_f1"] == pytest.approx(65 / 97)
    assert summary["cost_per_study"]["requests"] == pytest.approx(23 / 5)  # 21 distinct + 2 shared answers
