"""Reading judge answers tolerantly, and loading few-shot files (ours and microsoft/RadFact's)."""

from __future__ import annotations

import json

import pytest

from bench.errors import BenchError
from bench.llm import ChatResponse
from radfact.entailment import EntailmentPrompts, batched_request, faithful_request, parse_batched, parse_faithful
from radfact.examples import load_entailment_examples, load_phrase_examples
from radfact.phrases import PhrasePrompts, parse_phrases, phrase_request

PREMISE = ["Heart size is normal.", "Small left effusion."]


def r(text: str, error: str | None = None) -> ChatResponse:
    return ChatResponse(text=text, error=error)


def test_faithful_answers():
    ok = parse_faithful(r('{"phrase": "Normal heart.", "status": "entailment", "evidence": [1]}'), PREMISE,
                        "Normal heart.")
    assert ok.entailed and ok.evidence == (0,) and not (ok.failed or ok.rewritten or ok.evidence_mismatch)
    # JSON inside prose and a fence, evidence quoted as text, a three-way label
    fenced = parse_faithful(r('Sure:\n```json\n{"phrase": "Normal heart.", "status": "Entailment", '
                              '"evidence": ["heart size is normal"]}\n```'), PREMISE, "Normal heart.")
    assert fenced.entailed and fenced.evidence == (0,)
    assert not parse_faithful(r('{"phrase": "x", "status": "contradiction", "evidence": [2]}'), PREMISE, "x").entailed


@pytest.mark.parametrize("text", ["no json here", '{"phrase": "x", "status": "maybe", "evidence": []}',
                                  '{"phrase": "x", "status": "entailment", "evidence": []}', "[1, 2]"])
def test_unreadable_or_unsupported_answers_are_failures(text):
    v = parse_faithful(r(text), PREMISE, "x")
    assert v.failed and not v.entailed


def test_failed_request_is_a_failure():
    assert parse_faithful(r("", error="gave up after 5 attempts"), PREMISE, "x").failed


def test_rewrite_and_evidence_mismatch():
    v = parse_faithful(r('{"phrase": "Heart is normal", "status": "entailment", "evidence": [1]}'), PREMISE,
                       "Normal heart.")
    assert v.rewritten and v.entailed
    bad = parse_faithful(r('{"phrase": "x", "status": "entailment", "evidence": [3]}'), PREMISE, "x")
    assert bad.evidence_mismatch and not bad.entailed
    text = parse_faithful(r('{"phrase": "x", "status": "entailment", "evidence": ["pleural fluid"]}'), PREMISE, "x")
    assert text.evidence_mismatch


def test_batched_answers_by_index_position_and_missing():
    text = json.dumps({"verdicts": [{"index": 2, "status": "entailment", "evidence": [2]},
                                    {"index": 1, "status": "not_entailment", "evidence": []}]})
    v = parse_batched(r(text), PREMISE, 3)
    assert [x.entailed for x in v] == [False, True, False] and v[2].failed and not v[0].failed
    # no indices: taken by position
    v = parse_batched(r('[{"status": "entailment", "evidence": [1]}]'), PREMISE, 1)
    assert v[0].entailed
    assert all(x.failed for x in parse_batched(r("nothing"), PREMISE, 2))


def test_phrases_answers():
    assert parse_phrases(r('{"phrases": ["A.", " ", "B."]}')) == ["A.", "B."]
    assert parse_phrases(r('["A."]')) == ["A."]
    assert parse_phrases(r('{"phrases": "A."}')) is None
    assert parse_phrases(r("no")) is None


def test_requests_put_the_study_last_and_share_the_prefix():
    ep = EntailmentPrompts.load()
    a = faithful_request(ep, PREMISE, "Normal heart.")
    b = faithful_request(ep, ["Other."], "Other hypothesis.")
    assert a.messages[:-1] == b.messages[:-1]  # instructions and examples: a shared prefix
    assert a.messages[-1]["content"].endswith("Hypothesis: Normal heart.")
    assert a.json_schema is not None and a.response_format == "json"
    batched = batched_request(ep, PREMISE, ["h1", "h2"])
    assert batched.messages[-1]["content"].endswith("Hypotheses:\n1. h1\n2. h2")
    p = phrase_request(PhrasePrompts.load(), "Lungs clear.")
    assert p.messages[-1]["content"] == "Report:\nLungs clear."


def test_our_example_files_load():
    assert len(load_phrase_examples()) >= 3
    ex = load_entailment_examples()
    assert len(ex) >= 3 and all(len(e.hypotheses) == len(e.verdicts) for e in ex)
    assert len(EntailmentPrompts.load(n_examples=1).examples) == 1


def test_reference_phrase_format(tmp_path):
    path = tmp_path / "few_shot_examples.json"
    path.write_text(json.dumps([{"example_id": "1", "findings_text": "Views obtained. No effusion or pneumothorax.",
                                 "parsed_report": {"sentence_list": [
                                     {"orig": "Views obtained.", "new": [""]},
                                     {"orig": "No effusion or pneumothorax.",
                                      "new": ["No effusion.", "No pneumothorax."]}]}}]))
    [ex] = load_phrase_examples(path)
    assert ex.report.startswith("Views") and ex.phrases == ("No effusion.", "No pneumothorax.")


def test_bad_example_files_name_the_problem(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        load_phrase_examples(tmp_path / "missing.json")
    p = tmp_path / "x.json"
    p.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(BenchError, match="expected premise"):
        load_entailment_examples(p)
    p.write_text(json.dumps([{"input": {"phrases_A": ["a"], "phrases_B": ["b"]},
                              "output": {"phrases_A_evidenced": [{"phrase": "a", "status": "entailment",
                                                                  "evidence": ["zzz"]}],
                                         "phrases_B_evidenced": []}}]))
    with pytest.raises(BenchError, match="not one of the other side"):
        load_entailment_examples(p)
