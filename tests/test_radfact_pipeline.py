"""RadFact end to end with a scripted judge whose verdicts are known, so the scores can be
worked by hand; call counts per mode; the cache making a re-run free.

The scripted judge (`scripted_answer`) reads the prompt the way a model would:
- phrasing: splits the report at ". ";
- entailment: a hypothesis is entailed iff the same phrase is among the premises (evidence:
  its number); a hypothesis containing GARBLE gets an unreadable answer, BADEVIDENCE gets
  evidence pointing at premise 99, and (faithful mode) REWRITE gets its phrase echoed back
  changed.
"""

from __future__ import annotations

import asyncio
import json
import math
import re

import pytest

from bench.llm import ChatRequest, ChatResponse, LLMBackend, LLMClient, ResponseCache
from radfact.entailment import EntailmentPrompts
from radfact.evaluate import RadFactConfig, Study, evaluate
from radfact.scores import aggregate


def _numbered(block: str) -> list[str]:
    return [re.sub(r"^\d+\.\s*", "", line) for line in block.strip().splitlines() if re.match(r"^\d+\.", line)]


def _judge_one(premise: list[str], hyp: str) -> dict:
    if "GARBLE" in hyp:
        return {"status": "perhaps", "evidence": []}
    if "BADEVIDENCE" in hyp:
        return {"status": "entailment", "evidence": [99]}
    if hyp in premise:
        return {"status": "entailment", "evidence": [premise.index(hyp) + 1]}
    return {"status": "not_entailment", "evidence": []}


def scripted_answer(messages: list[dict]) -> str:
    last = messages[-1]["content"]
    if last.startswith("Report:"):
        report = last.split("\n", 1)[1].strip()
        return json.dumps({"phrases": [p if p.endswith(".") else p + "." for p in report.split(". ") if p.strip()]})
    premise_block, _, rest = last.partition("\n\nHypothes")
    premise = _numbered(premise_block)
    if rest.startswith("es:"):  # batched
        hyps = _numbered(rest[3:])
        return json.dumps({"verdicts": [{"index": i, **_judge_one(premise, h)} for i, h in enumerate(hyps, 1)]})
    hyp = rest[len("is: "):].strip()
    answer = _judge_one(premise, hyp)
    if answer["status"] == "perhaps":
        return "I am not sure about this one."
    return json.dumps({"phrase": hyp.replace("REWRITE", "Rewritten"), **answer})


class ScriptedBackend(LLMBackend):
    kind = "scripted"
    model = "judge"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, req: ChatRequest, timeout: float) -> ChatResponse:
        self.calls += 1
        await asyncio.sleep(0)
        text = scripted_answer(list(req.messages))
        return ChatResponse(text=text, prompt_tokens=sum(len(m["content"]) for m in req.messages) // 4,
                            completion_tokens=len(text) // 4, backend=self.kind, model=self.model)


STUDIES = [
    # precision 2/3 (heart, pneumothorax), recall 2/4
    Study("s1", prediction="Heart is normal. Small left effusion. No pneumothorax.",
          reference="Heart is normal. No pneumothorax. Lungs are clear. Mild edema."),
    # precision 1/2 (the GARBLE answer is a failure, not entailed), recall 1/1
    Study("s2", prediction="Lungs are clear. GARBLE opacity.", reference="Lungs are clear."),
    # empty prediction: precision NaN, recall 0/1, and no entailment call at all
    Study("s3", prediction="", reference="Cardiomegaly."),
    # evidence names no premise: invalid, dropped from both means
    Study("s4", prediction="BADEVIDENCE here.", reference="Heart size is normal."),
    # entailed both ways; faithful mode counts two rewrites
    Study("s5", prediction="REWRITE heart.", reference="REWRITE heart."),
]
# P = (2/3 + 1/2 + 1)/3 = 13/18, R = (1/2 + 1 + 0 + 1)/4 = 5/8, F1 = (65/72)/(97/72) = 65/97.


def run(mode: str, cache_path=None, backend=None):
    backend = backend or ScriptedBackend()
    client = LLMClient(backend, ResponseCache(cache_path))
    results = evaluate(STUDIES, client, RadFactConfig(mode=mode), progress=False)
    return results, backend, client


@pytest.mark.parametrize("mode,entail_calls,rewrites", [("faithful", 13, 2), ("batched", 7, 0)])
def test_scores_equal_hand_computed_values(mode, entail_calls, rewrites):
    results, backend, _ = run(mode)
    out = aggregate([r.score for r in results])
    assert out["radfact_precision"] == pytest.approx(13 / 18)
    assert out["radfact_recall"] == pytest.approx(5 / 8)
    assert out["radfact_f1"] == pytest.approx(65 / 97)
    assert out["radfact_llm_failures"] == 1
    assert out["radfact_invalid_studies"] == 1
    assert out["radfact_phrase_rewrites"] == rewrites
    # 8 phrasing calls (the empty prediction needs none; s5's two identical reports are
    # asked once) plus the entailment calls: faithful one per phrase (s1 3+4, s2 2+1,
    # s4 1+1, s5 1, its two directions being the same request), batched one per direction
    # (s5 again once).
    assert backend.calls == 8 + entail_calls
    by_id = {r.id: r for r in results}
    assert math.isnan(by_id["s3"].score.precision) and by_id["s3"].score.recall == 0
    assert by_id["s1"].prediction_phrases == ["Heart is normal.", "Small left effusion.", "No pneumothorax."]
    assert [v.evidence for v in by_id["s1"].recall_verdicts[:2]] == [(0,), (2,)]


def test_rerun_with_the_cache_makes_no_calls(tmp_path):
    path = tmp_path / "cache.sqlite"
    first, b1, _ = run("faithful", path)
    again, b2, client = run("faithful", path)
    assert b1.calls == 21 and b2.calls == 0 and client.usage.cache_hits == 23
    assert [r.score for r in again] == [r.score for r in first]


def test_already_phrased_input_skips_phrasing():
    backend = ScriptedBackend()
    client = LLMClient(backend, ResponseCache(None))
    studies = [Study("x", reference_phrases=("A.", "B."), prediction_phrases=("A.",))]
    [r] = evaluate(studies, client, RadFactConfig(mode="batched"), progress=False)
    assert backend.calls == 2 and r.score.precision == 1.0 and r.score.recall == 0.5


def test_reference_few_shot_format_drives_the_prompt(tmp_path):
    ref = [{"example_id": "e", "input": {"phrases_A": ["Heart normal."], "phrases_B": ["Normal heart.", "No edema."]},
            "output": {"phrases_A_evidenced": [{"phrase": "Heart normal.", "status": "entailment",
                                                "evidence": ["normal heart"]}],
                       "phrases_B_evidenced": [{"phrase": "Normal heart.", "status": "entailment",
                                                "evidence": ["Heart normal."]},
                                               {"phrase": "No edema.", "status": "neutral", "evidence": []}]}}]
    path = tmp_path / "few_shot_examples.json"
    path.write_text(json.dumps(ref))
    prompts = EntailmentPrompts.load(path)
    assert len(prompts.examples) == 2  # A against B, B against A
    backend = ScriptedBackend()
    client = LLMClient(backend, ResponseCache(None))
    seen: list[ChatRequest] = []
    original = backend.complete

    async def spy(req, timeout):
        seen.append(req)
        return await original(req, timeout)

    backend.complete = spy  # type: ignore[method-assign]
    evaluate([Study("x", reference_phrases=("A.",), prediction_phrases=("B.",))], client,
             RadFactConfig(mode="faithful"), entailment_prompts=prompts, progress=False)
    assert backend.calls == 2
    # system, then 3 example turns (1 + 2 hypotheses), then the study's question
    msgs = seen[0].messages
    assert len(msgs) == 1 + 2 * 3 + 1
    assert msgs[1]["content"] == "Premise phrases:\n1. Normal heart.\n2. No edema.\n\nHypothesis: Heart normal."
    assert json.loads(msgs[2]["content"]) == {"phrase": "Heart normal.", "status": "entailment", "evidence": [1]}
    assert json.loads(msgs[6]["content"])["status"] == "not_entailment"  # neutral -> not entailed
