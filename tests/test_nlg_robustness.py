"""One huge or pathological prediction must not take down NLG scoring (docs/metrics-nlg.md).

METEOR tests run the real jar (skipped without Java); one jar serves the module, except where
a test needs a fresh one.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import BenchError, MetricUnavailable
from bench.metrics.nlg import BleuMetric, MeteorMetric, RougeMetric, normalise_text
from bench.metrics.nlg.meteor import METEOR_STAT_FIELDS, MeteorProcess

REFS = [
    "The lungs are clear. No pleural effusion or pneumothorax.",
    "Mild cardiomegaly. Small left pleural effusion with adjacent atelectasis.",
    "Heart size is normal. No focal consolidation.",
]
PREDS = [
    "Lungs are clear without effusion.",
    "Cardiomegaly with a small left effusion.",
    "Normal heart size. No consolidation or edema.",
]
HUGE_REF = "No acute cardiopulmonary process."
# 50,000 words: a runaway generation repeating itself.
HUGE_PRED = " ".join(["the", "lungs", "are", "clear", "no", "effusion", "heart", "normal", "size", "stable"] * 5000)


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = ["meteor", *MeteorMetric.STAT_COLUMNS]
    assert a[cols].to_numpy().tolist() == b[cols].to_numpy().tolist()


@pytest.fixture(scope="module")
def jar():
    if shutil.which("java") is None:
        pytest.skip("METEOR needs a Java runtime")
    with MeteorMetric().open_jar() as process:
        yield process


@pytest.fixture(scope="module")
def alone(jar) -> pd.DataFrame:
    """The normal samples scored on their own."""
    return MeteorMetric().per_sample_with(jar, REFS, PREDS)


def test_normal_samples_are_neither_truncated_nor_failed(alone):
    assert not alone["meteor_truncated"].any() and not alone["meteor_failed"].any()
    assert MeteorMetric().failures(alone) is None


def test_huge_prediction_is_truncated_counted_and_harmless(jar, alone):
    metric = MeteorMetric()
    start = time.monotonic()
    rows = metric.per_sample_with(jar, [REFS[0], HUGE_REF, *REFS[1:]], [PREDS[0], HUGE_PRED, *PREDS[1:]])
    assert time.monotonic() - start < 120  # untruncated, the jar would need many minutes
    huge = rows.iloc[1]
    assert bool(huge["meteor_truncated"]) and not bool(huge["meteor_failed"])
    assert huge["meteor_test_len"] <= 1.2 * metric.max_tokens  # the jar may split a few tokens further
    assert 0.0 <= huge["meteor"] < 0.1
    _same_rows(rows.drop(index=1).reset_index(drop=True), alone)
    assert metric.failures(rows) == {"failed": 1, "of": 4, "what": "samples truncated to 1000 tokens for METEOR"}
    # Truncation means: the first max_tokens normalised tokens, scored as usual.
    first = " ".join(normalise_text(HUGE_PRED).split(" ")[:1000])
    explicit = metric.per_sample_with(jar, [HUGE_REF], [first])
    assert not explicit["meteor_truncated"].iloc[0]
    _same_rows(rows.iloc[[1]].reset_index(drop=True), explicit)


def test_max_tokens_is_an_option_recorded_in_the_config():
    metric = MeteorMetric.from_options({"max_tokens": "50"})
    assert metric.max_tokens == 50 and metric.config()["max_tokens"] == 50
    assert "max_tokens" in metric.description and MeteorMetric().config()["max_tokens"] == 1000
    with pytest.raises(BenchError):
        MeteorMetric.from_options({"max_tokens": "0"})


def test_small_max_tokens_truncates_references_too(jar):
    rows = MeteorMetric(max_tokens=3).per_sample_with(jar, [REFS[1], "no effusion"], ["cardiomegaly", "no effusion"])
    assert list(rows["meteor_truncated"]) == [True, False]
    assert rows["meteor_ref_len"].iloc[0] == 3


PROTOCOL_BREAKERS = [
    "No effusion ||| SCORE ||| a ||| b",
    "Line one.\nLine two.\r\nLine three.\rEnd",
    "tab\there, nul\x00, unit\x1fsep, \x1c\x1d\x1e, next\x85line, \u2028para\u2029graph",
    "lone surrogate \ud800 here |||",
    "|||",
    "EVAL ||| 1 2 3",
]


def test_normalisation_removes_protocol_breakers():
    for text in PROTOCOL_BREAKERS:
        norm = normalise_text(text)
        assert "|||" not in norm and not any(c in norm for c in "\n\r\x00\x1c\x1d\x1e\x1f\x85\u2028\u2029")


def test_protocol_breaking_texts_score_without_desynchronising(jar, alone):
    n = len(PROTOCOL_BREAKERS)
    refs = REFS + ["No effusion.\nNo pneumothorax ||| none"] * n
    preds = PREDS + PROTOCOL_BREAKERS
    rows = MeteorMetric().per_sample_with(jar, refs, preds)
    assert not rows["meteor_failed"].any()
    assert rows["meteor"].between(0.0, 1.0).all()
    _same_rows(rows.iloc[: len(REFS)], alone)
    # Also raw, without normalisation: the jar client's own guard keeps one answer per line.
    jar.stats("a ||| b\nc", "d\r\ne ||| f")
    assert jar.stats("no acute findings", "no acute findings")[:2] == [3.0, 3.0]


def _rows_with_failure(jar, monkeypatch, break_call) -> pd.DataFrame:
    """Score a bad sample between the normal ones; `break_call(jar)` breaks the jar's reply to it."""
    original = MeteorProcess.stats

    def stats(self: MeteorProcess, reference: str, prediction: str) -> list[float]:
        if "poisoned" in prediction:
            break_call(self)
        return original(self, reference, prediction)

    monkeypatch.setattr(MeteorProcess, "stats", stats)
    return MeteorMetric().per_sample_with(jar, [REFS[0], "no effusion", *REFS[1:]], [PREDS[0], "poisoned", *PREDS[1:]])


def _assert_only_the_bad_sample_failed(rows: pd.DataFrame, alone: pd.DataFrame) -> None:
    assert list(rows["meteor_failed"]) == [False, True, False, False]
    bad = rows.iloc[1]
    assert math.isnan(bad["meteor"])
    assert all(bad[f"meteor_{f}"] == 0.0 for f in METEOR_STAT_FIELDS)
    _same_rows(rows.drop(index=1).reset_index(drop=True), alone)
    # The scorer leaves failed rows out; even if they were summed, their zeros are neutral.
    metric = MeteorMetric()
    assert metric.aggregate(rows) == metric.aggregate(alone)


def test_jar_dying_on_one_sample_fails_only_that_sample(jar, alone, monkeypatch):
    rows = _rows_with_failure(jar, monkeypatch, lambda process: process._proc.kill())
    _assert_only_the_bad_sample_failed(rows, alone)


def test_unparseable_reply_fails_only_that_sample(jar, alone, monkeypatch):
    original = MeteorProcess._read_line

    def garbled(process: MeteorProcess) -> None:
        # The next reply reads as garbage; the real answer stays in the pipe, which would
        # shift every later answer by one if the jar were not replaced.
        def read_once(self: MeteorProcess) -> str:
            monkeypatch.setattr(MeteorProcess, "_read_line", original)
            original(self)
            return "not statistics"

        monkeypatch.setattr(MeteorProcess, "_read_line", read_once)

    rows = _rows_with_failure(jar, monkeypatch, garbled)
    _assert_only_the_bad_sample_failed(rows, alone)


def _wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """Until every thread of `pid` is stopped. SIGSTOP stops a process's threads one after the
    other, and until it reaches the JVM's reader thread that thread can still answer a request
    (seen on a loaded machine: the 'stopped' jar replied to the sample meant to time out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:  # a thread that ended meanwhile
                pass
        if states and all(s in "tT" for s in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"the METEOR jar (pid {pid}) did not stop within {timeout} s of SIGSTOP")


def test_timeout_on_one_sample_fails_only_that_sample(jar, alone, monkeypatch):
    # A jar of its own: the module's shared jar may still hold a late reply from the tests that
    # garble or kill it, which a stopped jar's pipe would then hand back as this sample's answer.
    if shutil.which("java") is None:
        pytest.skip("METEOR needs a Java runtime")

    def tiny_timeout(process: MeteorProcess) -> None:
        # A jar that cannot answer (stopped) and a short limit: the call must time out, whatever
        # the machine's load (a 1-ns limit alone can lose the race to a fast reply).
        import os
        import signal

        os.kill(process._proc.pid, signal.SIGSTOP)
        _wait_stopped(process._proc.pid)
        process.timeout_s = 0.5
        # Back to normal for the restarted jar, which needs seconds to load.
        monkeypatch.setattr(MeteorProcess, "restart", lambda self: (setattr(self, "timeout_s", 120.0),
                                                                    restart(self)))

    restart = MeteorProcess.restart
    with MeteorMetric().open_jar() as own:
        rows = _rows_with_failure(own, monkeypatch, tiny_timeout)
    _assert_only_the_bad_sample_failed(rows, alone)


def test_jar_that_cannot_start_is_unavailable():
    if shutil.which("false") is None:
        pytest.skip("needs the 'false' command")
    # "false" starts and exits at once: the first call fails, and so does the restart.
    with pytest.raises(MetricUnavailable, match="trivial sample"):
        MeteorMetric(java="false").per_sample(REFS, PREDS)


@pytest.mark.parametrize("metric_cls", [BleuMetric, RougeMetric])
def test_bleu_and_rouge_on_a_100k_word_prediction(metric_cls):
    huge = " ".join(["the", "lungs", "are", "clear", "no", "effusion", "heart", "normal", "size", "stable"] * 10_000)
    reference = " ".join(["no", "acute", "cardiopulmonary", "process", "lungs", "clear"] * 10)  # 60 words
    normalise_text(huge)  # normalisation (a few seconds here) is shared by all metrics and timed apart
    start = time.monotonic()
    rows = metric_cls().per_sample([REFS[0], reference, REFS[1]], [PREDS[0], huge, PREDS[1]])
    assert time.monotonic() - start < 10  # measured well under 1 s
    alone = metric_cls().per_sample([REFS[0], REFS[1]], [PREDS[0], PREDS[1]])
    assert rows.drop(index=1).reset_index(drop=True).equals(alone)
