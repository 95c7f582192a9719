"""GREEN (green_metric): our parser on answers we wrote, the prompt loaded at run time, and
the metric through the LLM client against a scripted judge.

The answers below are ours, written in the format GREEN's prompt asks for; the expected
scores are worked by hand from GREEN's definition, matched / (matched + significant
errors), 0 when nothing matched. An answer in another format fails its study: never a score.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
from llm_server import FaultServer, completion

from bench.errors import BenchError, MetricUnavailable
from bench.llm import LLMClient, ResponseCache
from bench.llm.openai_compat import OpenAICompatBackend
from green_metric.answer import GreenFormatError, parse_answer
from green_metric.metric import GreenMetric
from green_metric.prompt import load_prompt

# Three significant errors (1 + 2), one insignificant, three matched: 3 / (3 + 3).
HALF = textwrap.dedent("""\
    [Explanation]:
    The candidate invents an effusion and misses two nodules; the heart is described as in the reference.

    [Clinically Significant Errors]:
    (a) False report of a finding in the candidate: 1. Left pleural effusion
    (b) Missing a finding present in the reference: 2. Right upper lobe nodule; left lower lobe nodule
    (c) Misidentification of a finding's anatomic location/position: 0.
    (d) Misassessment of the severity of a finding: 0.
    (e) Mentioning a comparison that isn't in the reference: 0.
    (f) Omitting a comparison detailing a change from a prior study: 0.

    [Clinically Insignificant Errors]:
    (a) False report of a finding in the candidate: 1. Mild degenerative change of the spine
    (b) Missing a finding present in the reference: 0.
    (c) Misidentification of a finding's anatomic location/position: 0.
    (d) Misassessment of the severity of a finding: 0.
    (e) Mentioning a comparison that isn't in the reference: 0.
    (f) Omitting a comparison detailing a change from a prior study: 0.

    [Matched Findings]:
    3. Normal heart size; no pneumothorax; clear right lung base
    """)

PERFECT = textwrap.dedent("""\
    [Explanation]:
    Both reports say the same.

    [Clinically Significant Errors]:
    No errors.

    [Clinically Insignificant Errors]:
    No errors.

    [Matched Findings]:
    2. No effusion; normal heart size
    """)


def test_hand_worked_answers():
    a = parse_answer(HALF)
    assert a.significant == (1, 2, 0, 0, 0, 0) and a.insignificant == (1, 0, 0, 0, 0, 0) and a.matched == 3
    assert a.score == pytest.approx(0.5)
    p = parse_answer(PERFECT)
    assert (p.significant, p.matched, p.score) == ((0,) * 6, 2, 1.0)


def test_nothing_matched_scores_zero_as_green_defines_it():
    text = PERFECT.replace("2. No effusion; normal heart size", "No matched findings.")
    assert parse_answer(text).score == 0.0
    text = HALF.replace("3. Normal heart size; no pneumothorax; clear right lung base", "0.")
    assert parse_answer(text).score == 0.0


def test_numbered_categories_out_of_order_and_lines_without_counts():
    text = textwrap.dedent("""\
        [Clinically Significant Errors]:
        (4) Misassessment of the severity of a finding: 2. Effusion called small; edema called mild
        (1) False report of a finding in the candidate: 1. Pneumothorax
        (6) Omitting a comparison detailing a change from a prior study: none

        [Clinically Insignificant Errors]:
        (c) Misidentification of a finding's anatomic location/position: 1. Line tip position

        [Matched Findings]:
        1. Cardiomegaly
        """)
    a = parse_answer(text)
    assert a.significant == (1, 0, 0, 2, 0, 0)  # (6) has no count: 0, as GREEN's code reads it
    assert a.insignificant == (0, 0, 1, 0, 0, 0)
    assert a.score == pytest.approx(1 / 4)


@pytest.mark.parametrize("text, why", [
    ("I am sorry, I cannot evaluate radiology reports.", r"lacks \[Clinically Significant Errors\]"),
    (HALF.split("[Matched Findings]")[0], r"lacks \[Matched Findings\]"),
    (HALF.replace("3. Normal heart size", "Normal heart size"), r"does not begin with '<count>\.'"),
    (PERFECT.replace("[Clinically Significant Errors]:\nNo errors.",
                     "[Clinically Significant Errors]:\nThere are a few errors."), r"neither category lines"),
    (HALF.replace("(c) Misidentification", "(a) Misidentification", 1), r"category \(a\) twice"),
    (PERFECT.replace("2. No effusion; normal heart size\n", ""), r"does not begin with"),  # empty section
])
def test_unexpected_formats_are_errors_not_scores(text, why):
    with pytest.raises(GreenFormatError, match=why):
        parse_answer(text)


# -- the prompt --------------------------------------------------------------------

def test_prompt_from_a_file(tmp_path):
    f = tmp_path / "green.txt"
    f.write_text("Compare {reference} with {candidate}. Answer as {format} says.\nReference again: {reference}")
    p = load_prompt(f)
    # Each placeholder replaced; other braces kept; a report holding a placeholder stays as written.
    assert p.text("R1", "C {reference} C") == ("Compare R1 with C {reference} C. Answer as {format} says.\n"
                                                "Reference again: R1")
    f.write_text("Only {reference} here")
    with pytest.raises(BenchError, match=r"lacks \{candidate\}"):
        load_prompt(f)


def fake_green_package(root, body: str) -> None:
    """An installed-looking green_score whose __init__ cannot be imported here: the loader must
    read make_prompt from the source without importing the package."""
    pkg = root / "green_score"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import a_module_that_is_not_installed\n")
    (pkg / "utils.py").write_text("import torch.distributed as dist\n\n\n" + textwrap.dedent(body))


def test_prompt_from_the_installed_package_without_importing_it(tmp_path, monkeypatch):
    fake_green_package(tmp_path, '''
        def helper():
            return 1


        def make_prompt(text1, text2):
            return f"OUR TEST PROMPT\\nref: {text1}\\ncand: {text2}\\n{{braces}}"
        ''')
    monkeypatch.syspath_prepend(str(tmp_path))
    p = load_prompt()
    assert p.template == "OUR TEST PROMPT\nref: {reference}\ncand: {candidate}\n{braces}"
    assert p.text("A", "B") == "OUR TEST PROMPT\nref: A\ncand: B\n{braces}"
    assert "green_score" in p.source and str(tmp_path) in p.source and len(p.digest) == 12


def test_without_the_package_or_a_file_the_metric_is_unavailable(tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("green_score") is not None:
        pytest.skip("green_score is installed here")
    m = GreenMetric(judge="openai:http://127.0.0.1:9/v1", model="m")
    with pytest.raises(MetricUnavailable, match=r"needs the green_score package") as e:
        m.check()
    assert "pip install green-score" in e.value.remedy
    f = tmp_path / "p.txt"
    f.write_text("{reference} / {candidate}")
    with pytest.raises(MetricUnavailable, match=r"no judge endpoint configured"):
        GreenMetric(prompt=str(f)).check()


# -- the metric, against a scripted judge ---------------------------------------------

ANSWERS = {"cand-half": HALF, "cand-perfect": PERFECT, "cand-chatty": "Looks fine to me overall!"}


def judge(body: dict, n: int):
    prompt = body["messages"][-1]["content"]
    return completion(next(a for k, a in ANSWERS.items() if k in prompt), prompt_tokens=50, completion_tokens=20)


def test_metric_scores_counts_fails_and_caches(tmp_path):
    from bench.stages.score import score

    f = tmp_path / "p.txt"
    f.write_text("REF: {reference}\nCAND: {candidate}")
    refs = ["ref one", "ref two", "ref three"]
    preds = ["cand-half", "cand-perfect", "cand-chatty"]
    with FaultServer(judge, models=["green"]) as srv:
        client = LLMClient(OpenAICompatBackend([srv.url], "green"), ResponseCache(tmp_path / "c.sqlite"))
        m = GreenMetric(prompt=str(f), progress=False, client=client)
        m.check()
        rows = m.per_sample(refs, preds)
        # Requests run concurrently, so the server sees them in any order: each prompt is the
        # file's template filled with its own pair, and nothing else is sent.
        expected = [[{"role": "user", "content": f"REF: {r}\nCAND: {c}"}] for r, c in zip(refs, preds)]
        sent = [b["messages"] for b in srv.bodies]
        assert all(x in sent for x in expected) and all(x in expected for x in sent)
        assert all(b["temperature"] == 0.0 and b["max_tokens"] == 2048 for b in srv.bodies)
        assert list(rows["green_failed"]) == [False, False, True]
        assert "unexpected format" in rows["green_error"][2]
        assert math.isnan(rows["green_score"][2])  # failed: no score at all
        assert list(rows["green_score"][:2]) == [0.5, 1.0]
        # Through the scorer: the failed study is counted, left out, never scored.
        res = score(["1", "2", "3"], refs, preds, [m], n_bootstrap=200, seed=0)
        g = res.metrics["green"]
        assert g["status"] == "ok" and g["n_failed_samples"] == 1 and g["n_scored"] == 2
        assert g["values"]["green_score"]["value"] == pytest.approx(0.75)
        assert g["values"]["green_sig_b"]["value"] == pytest.approx(1.0)  # (2 + 0) / 2
        assert g["values"]["green_matched"]["value"] == pytest.approx(2.5)
        iv = g["values"]["green_score"]
        assert 0.5 <= iv["low"] <= iv["high"] <= 1.0
        hits = srv.total_hits
        # A second metric on the same cache asks the judge nothing.
        again = GreenMetric(prompt=str(f), progress=False,
                            client=LLMClient(OpenAICompatBackend([srv.url], "green"),
                                             ResponseCache(tmp_path / "c.sqlite")))
        rows2 = again.per_sample(refs, preds)
        assert srv.total_hits == hits and again.client().usage.cache_hits == 3
        assert rows2["green_score"][:2].tolist() == [0.5, 1.0]


def test_aggregate_is_the_mean_of_scored_studies():
    import pandas as pd

    m = GreenMetric()
    rows = pd.DataFrame({"green_score": [0.5, 1.0, np.nan, 0.25], "green_failed": [False, False, True, False],
                         **{c: [0.0] * 4 for c in ("green_matched",)}})
    for c in [f"green_{k}_{x}" for k in ("sig", "insig") for x in "abcdef"]:
        rows[c] = [1.0, 0.0, np.nan, 2.0]
    out = m.aggregate(rows)
    assert out["green_score"] == pytest.approx((0.5 + 1.0 + 0.25) / 3)
    assert out["green_sig_a"] == pytest.approx(1.0)


def test_every_study_failing_is_unavailable_not_zero(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("{reference} {candidate}")
    with FaultServer(lambda body, n: completion("no idea"), models=["green"]) as srv:
        m = GreenMetric(prompt=str(f), progress=False,
                        client=LLMClient(OpenAICompatBackend([srv.url], "green"), ResponseCache(None)))
        with pytest.raises(MetricUnavailable, match=r"no study could be scored \(2 of 2 failed"):
            m.per_sample(["a", "b"], ["c", "d"])
