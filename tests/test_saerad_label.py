"""Feature labelling: the answer-line parser, the LLM labeller's retry path with a scripted
backend behind the real client, the LLM-free labeller on a constructed corpus, labels files."""

from __future__ import annotations

import json

import pytest

from bench.errors import DataError
from bench.llm.base import ChatRequest, ChatResponse, LLMBackend, LLMRequestError
from bench.llm.client import LLMClient
from saerad.features.label import (NUDGE_REPLY_CHARS, LexicalLabeller, LLMLabeller, load_labels, load_prompt,
                                   parse_description, render_label_prompt, save_labels, status_counts)
from saerad.features.statements import split_statements, statement_key


# -- the answer line --------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected", [
    ("Step 1: ...\nStep 2: ...\n*This feature represents a moderate right pleural effusion.",
     "A moderate right pleural effusion."),
    ("reasoning\n\n*This feature represents cardiomegaly and a tortuous aorta", "Cardiomegaly and a tortuous aorta."),
    ("**This feature represents a left-sided pacemaker.**", "A left-sided pacemaker."),  # markdown bold
    ("- * This feature represents: bibasilar atelectasis.  ", "Bibasilar atelectasis."),
    ("*this feature represents [small bilateral effusions].", "Small bilateral effusions."),
    # Two answer lines (a draft, then the final one): the last wins.
    ("*This feature represents effusion.\nOn reflection:\n*This feature represents a small left effusion.",
     "A small left effusion."),
])
def test_parse_description_reads_the_asterisk_line(reply, expected):
    assert parse_description(reply) == expected


@pytest.mark.parametrize("reply", [
    "This feature represents a pleural effusion.",  # no asterisk
    "The neuron detects *This feature represents effusion",  # asterisk not at the line start
    "* Report 1: mentions effusion\n* Report 2: mentions effusion",  # bullets, no answer line
    "*This feature represents",  # empty description
    "*This feature represents ...",
    "",
])
def test_parse_description_rejects_malformed_replies(reply):
    assert parse_description(reply) is None


def test_prompt_file_is_ours_and_validated(tmp_path):
    text = load_prompt(None)
    rendered = render_label_prompt(text, ["Moderate right effusion.", "Right effusion,\n  small."])
    assert "Report 1:\nModerate right effusion." in rendered and "Report 2:\nRight effusion, small." in rendered
    assert "{reports}" not in rendered and "2 images" in rendered
    assert "*This feature represents" in rendered
    bad = tmp_path / "p.txt"
    bad.write_text("no placeholder here")
    with pytest.raises(DataError, match="placeholder"):
        load_prompt(bad)


# -- LLM labeller with a scripted backend ------------------------------------------------

class ScriptedBackend(LLMBackend):
    """Answers from a script keyed by the first report in the prompt; records every request."""

    kind = "scripted"
    model = "script"

    def __init__(self, script: dict[str, list[str]]):
        self.script = {k: list(v) for k, v in script.items()}
        self.requests: list[ChatRequest] = []

    async def complete(self, req: ChatRequest, timeout: float) -> ChatResponse:
        self.requests.append(req)
        first = req.messages[0]["content"].split("Report 1:\n")[1].split("\n")[0]
        return ChatResponse(text=self.script[first].pop(0), backend=self.kind, model=self.model)


def test_llm_labeller_retries_with_a_nudge_then_records_unlabelled():
    backend = ScriptedBackend({
        "A.": ["thinking...\n*This feature represents a small left pleural effusion."],
        "B.": ["I think it is an effusion.", "*This feature represents bilateral effusions."],
        "C.": ["no idea", "still no idea", "nope"],
    })
    client = LLMClient(backend, max_retries=0)
    labeller = LLMLabeller(client, retries=2)
    recs = labeller.label_many([(0, ["A.", "x"]), (1, ["B."]), (2, ["C.", "y", "z"]), (3, [])])
    assert [r.status for r in recs] == ["labelled", "labelled", "unlabelled", "no_examples"]
    assert recs[0].label == "A small left pleural effusion." and recs[0].n_top == 2
    assert recs[1].label == "Bilateral effusions."
    assert recs[2].raw == "nope" and recs[2].label == "" and recs[2].n_top == 3
    # B got one follow-up turn, C two (retries=2), A none; the follow-up carries the
    # model's own reply and the nudge.
    by_first = {}
    for r in backend.requests:
        by_first.setdefault(r.messages[0]["content"].split("Report 1:\n")[1][:2], []).append(r)
    assert [len(v) for v in (by_first["A."], by_first["B."], by_first["C."])] == [1, 2, 3]
    follow = by_first["B."][1].messages
    assert [m["role"] for m in follow] == ["user", "assistant", "user"]
    assert follow[1]["content"] == "I think it is an effusion." and "*This feature represents" in follow[2]["content"]
    assert status_counts(recs) == {"labelled": 2, "unlabelled": 1, "no_examples": 1, "error": 0}


def test_follow_ups_stay_bounded_and_a_failed_follow_up_leaves_the_feature_unlabelled():
    """A real run with SmolLM2 on a 2,048-token llama.cpp server: a ~1,000-token prompt,
    a ~1,000-token reply without the answer line, and the follow-up that repeated the
    whole reply overflowed the context (HTTP 400); the feature was then counted as an
    error although the model had answered."""
    long_reply = " ".join(f"word{i}" for i in range(1500))  # ~10,000 characters, no answer line

    class OverflowingServer(LLMBackend):
        kind, model = "ctx", "m"

        def __init__(self, limit_chars: int):
            self.limit, self.requests = limit_chars, []

        async def complete(self, req, timeout):
            self.requests.append(req)
            if sum(len(m["content"]) for m in req.messages) > self.limit:
                raise LLMRequestError("HTTP 400: context_length_exceeded", status=400)
            return ChatResponse(text=long_reply)

    # Generous limit: follow-ups fit, because each repeats only the end of the latest reply
    # and never the earlier failed turns (3 requests, all the same bounded length).
    prompt_len = len(render_label_prompt(LLMLabeller(None).template, ["A."]))
    ok = OverflowingServer(prompt_len + NUDGE_REPLY_CHARS + 400)
    rec = LLMLabeller(LLMClient(ok, max_retries=0), retries=2).label_many([(0, ["A."])])[0]
    assert rec.status == "unlabelled" and rec.raw == long_reply and len(ok.requests) == 3
    for req in ok.requests[1:]:
        assert [m["role"] for m in req.messages] == ["user", "assistant", "user"]
        repeated = req.messages[1]["content"]
        assert repeated.startswith("...") and long_reply.endswith(repeated[3:])
        assert len(repeated) <= NUDGE_REPLY_CHARS + 3 and " " + repeated[3:] in long_reply

    # Tight limit: the follow-up is refused; the feature is unlabelled with the reply kept.
    tight = OverflowingServer(prompt_len + 100)
    rec = LLMLabeller(LLMClient(tight, max_retries=0), retries=2).label_many([(0, ["A."])])[0]
    assert rec.status == "unlabelled" and len(tight.requests) == 2
    assert rec.raw.startswith(long_reply) and "follow-up failed" in rec.raw and "context_length_exceeded" in rec.raw


def test_copies_of_the_prompts_example_answers_are_not_labels():
    """SmolLM2-135M answered the nudge with its example line word for word, which made
    every such feature "a small left pleural effusion"; the template's placeholder is
    copied the same way. The same finding in a first reply (before the model has seen the
    nudge) is a real answer."""
    backend = ScriptedBackend({
        "A.": ["hmm", "*This feature represents a small left pleural effusion.", "**This feature represents A small "
               "left pleural effusion**"],
        "B.": ["*This feature represents <your description>.", "*This feature represents a small right pleural "
               "effusion."],
        "C.": ["*This feature represents a small left pleural effusion."],
    })
    recs = LLMLabeller(LLMClient(backend, max_retries=0), retries=2).label_many([(0, ["A."]), (1, ["B."]),
                                                                                 (2, ["C."])])
    assert [r.status for r in recs] == ["unlabelled", "labelled", "labelled"]
    assert recs[2].label == "A small left pleural effusion."
    assert recs[0].raw == "**This feature represents A small left pleural effusion**"
    assert recs[1].label == "A small right pleural effusion." and len(backend.requests) == 6


def test_llm_labeller_records_failed_calls_as_errors():
    class Broken(LLMBackend):
        kind, model = "broken", "x"

        async def complete(self, req, timeout):
            raise RuntimeError("server on fire")

    recs = LLMLabeller(LLMClient(Broken(), max_retries=0)).label_many([(5, ["A."])])
    assert recs[0].status == "error" and "server on fire" in recs[0].raw


# -- LLM-free labeller --------------------------------------------------------------------

def test_statement_keys_merge_phrasings():
    assert statement_key("There is a moderate right pleural effusion") == "moderate right pleural effusion"
    assert statement_key("A moderate right-sided pleural effusion is again seen") == "moderate right pleural effusion"
    assert statement_key("Questionable right lower lobe pneumonia") == "right lower lobe pneumonia"
    sts = split_statements("Right IJ central line with tip in the SVC. No effusion; lungs are clear.")
    assert sts == ["Right IJ central line with tip in the SVC", "Right IJ central line", "No effusion", "lungs are clear"]


def _corpus():
    normal = "Heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."
    planted = "There is a moderate right pleural effusion. Heart size is normal. No pneumothorax."
    decoy = "Mild cardiomegaly. Small left pleural effusion. No pneumothorax."
    rare = "Left-sided pacemaker with leads in the right atrium and right ventricle. The lungs are clear."
    corpus = [normal] * 150 + [planted] * 12 + [decoy] * 30 + [rare] * 8
    # Top reports: 7 state the planted finding (in several phrasings), 2 a rare device, 1 normal.
    top = ["Moderate right pleural effusion. Heart size is normal.",
           planted, planted,
           "A moderate right-sided pleural effusion is again seen. No pneumothorax.",
           planted, "Moderate right pleural effusion, unchanged. Lungs otherwise clear.",
           "There is a moderate right pleural effusion. Mild cardiomegaly.",
           rare, rare, normal]
    return corpus + top, top


def test_lexical_labeller_picks_the_planted_statement():
    corpus, top = _corpus()
    lab = LexicalLabeller(corpus)
    rec = lab.label(7, top)
    assert rec.status == "labelled" and rec.method == "lexical" and rec.n_top == 10
    assert rec.label == "Moderate right pleural effusion."
    cands = lab.candidates(top)
    # Common normal statements appear in the top reports too, but no more than in the corpus.
    normal = next(c for c in cands if c.key == "heart size is normal")
    assert normal.z < cands[0].z and cands[0].support == 7


def test_lexical_labeller_unlabelled_and_empty_cases():
    lab = LexicalLabeller(["Heart size is normal.", "Small left effusion."] * 5)
    assert lab.label(1, []).status == "no_examples"
    rec = lab.label(2, ["Heart size is normal.", "Small left effusion."])  # nothing recurs
    assert rec.status == "unlabelled" and rec.label == ""
    assert lab.label(3, ["Small left effusion."]).label == "Small left effusion."
    with pytest.raises(DataError, match="empty"):
        LexicalLabeller([])


def test_labels_file_roundtrip_and_plain_map(tmp_path):
    lab = LexicalLabeller(["Small left effusion."] * 3)
    recs = [lab.label(0, ["Small left effusion."] * 3), lab.label(1, [])]
    path = save_labels(tmp_path / "labels.json", recs, meta={"method": "lexical"})
    doc = json.loads(path.read_text())
    assert doc["meta"]["counts"]["labelled"] == 1
    assert set(doc["features"][0]) == {"id", "label", "method", "raw", "n_top", "status"}
    back = load_labels(path)
    assert back[0].label == "Small left effusion." and back[1].status == "no_examples"
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"4": "Pacemaker.", "9": ""}))
    got = load_labels(plain)
    assert got[4].label == "Pacemaker." and got[9].status == "unlabelled"
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="expected"):
        load_labels(tmp_path / "bad.json")
