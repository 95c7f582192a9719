"""Report composition: the LLM-free composer's order, duplicates and contradictions (cases
worked out by hand), and the LLM composer's prompt blocks with a scripted backend."""

from __future__ import annotations

from pathlib import Path

from bench.data.records import Prior, Sample
from bench.llm.base import ChatRequest, ChatResponse, LLMBackend
from bench.llm.client import LLMClient
from saerad.compose.llm import LLMComposer, attribute, describe_interval, feature_sentence, features_block
from saerad.compose.llm_free import ActiveFeature, compose_llm_free
from saerad.features.statements import Topic, is_normal, topics


def F(i: int, score: float, desc: str | None) -> ActiveFeature:
    return ActiveFeature(i, activation=score * 2, score=score, description=desc)


def test_importance_order_and_normal_statements_last():
    comp = compose_llm_free([F(1, 0.4, "Heart size is normal."), F(2, 1.0, "Small left pleural effusion."),
                             F(3, 0.7, "Right IJ central line.")])
    assert comp.text == "Small left pleural effusion. Right IJ central line. Heart size is normal."
    assert [s["features"] for s in comp.sentences] == [[2], [3], [1]]


def test_duplicates_are_merged_into_the_higher_scoring_sentence():
    comp = compose_llm_free([F(1, 0.9, "Moderate right pleural effusion."),
                             F(2, 0.5, "There is a moderate right pleural effusion."),  # same key
                             F(3, 0.4, "Right pleural effusion."),  # its words are contained
                             F(4, 0.3, None)])  # unlabelled: ignored
    assert comp.text == "Moderate right pleural effusion."
    assert comp.sentences == [{"text": "Moderate right pleural effusion.", "features": [1, 2, 3]}]
    assert comp.dropped == []


def test_contradictions_keep_the_higher_scoring_statement():
    # "No pleural effusion" (no side) contradicts a left effusion; the effusion scores higher.
    comp = compose_llm_free([F(1, 0.3, "No pleural effusion."), F(2, 0.8, "Small left pleural effusion."),
                             F(3, 0.5, "No pneumothorax.")])
    assert comp.text == "Small left pleural effusion. No pneumothorax."
    assert comp.dropped == [{"feature": 1, "statement": "No pleural effusion.",
                             "reason": "contradicts the higher-scoring feature(s) [2]"}]
    # The other way round: the normal statement wins and the effusion is dropped.
    comp = compose_llm_free([F(1, 0.9, "No pleural effusion."), F(2, 0.8, "Small left pleural effusion.")])
    assert comp.text == "No pleural effusion."
    # Opposite sides do not contradict.
    comp = compose_llm_free([F(1, 0.9, "No right pleural effusion."), F(2, 0.8, "Small left pleural effusion.")])
    assert comp.text == "Small left pleural effusion. No right pleural effusion."
    # "Lungs are clear" contradicts a consolidation; "heart size is normal" contradicts cardiomegaly.
    comp = compose_llm_free([F(1, 1.0, "Right lower lobe consolidation."), F(2, 0.9, "Mild cardiomegaly."),
                             F(3, 0.6, "The lungs are clear."), F(4, 0.5, "Heart size is normal."),
                             F(5, 0.4, "No pneumothorax.")])
    assert comp.text == "Right lower lobe consolidation. Mild cardiomegaly. No pneumothorax."
    assert {d["feature"] for d in comp.dropped} == {3, 4}


def test_max_sentences_keeps_the_strongest_abnormal_first():
    feats = [F(i, 1 - i / 10, d) for i, d in enumerate(
        ["Heart size is normal.", "Small left pleural effusion.", "Right IJ central line.", "Left pacemaker."])]
    comp = compose_llm_free(feats, max_sentences=2)
    assert comp.text == "Small left pleural effusion. Right IJ central line."
    assert {d["feature"] for d in comp.dropped} == {0, 3}
    assert compose_llm_free([]).text == ""


def test_topics_read_side_and_polarity():
    assert topics("Small left pleural effusion") == {Topic("pleural_effusion", "left", True)}
    assert topics("bilateral pleural effusions") == {Topic("pleural_effusion", "both", True)}
    assert Topic("pleural_effusion", "", False) in topics("No pleural effusion or pneumothorax")
    assert Topic("pneumothorax", "", False) in topics("No pleural effusion or pneumothorax")
    assert topics("Heart size is normal") == {Topic("cardiomegaly", "", False)}
    assert is_normal("The lungs are clear.") and not is_normal("Mild cardiomegaly.")
    assert Topic("pleural_effusion", "both", True).conflicts(Topic("pleural_effusion", "right", False))
    assert not Topic("pleural_effusion", "left", True).conflicts(Topic("pleural_effusion", "right", False))


# -- LLM composer ---------------------------------------------------------------------------

class Echo(LLMBackend):
    kind, model = "echo", "e"

    def __init__(self, reply: str = "Small left pleural effusion is present. No pneumothorax is seen."):
        self.reply = reply
        self.prompts: list[str] = []

    async def complete(self, req: ChatRequest, timeout: float) -> ChatResponse:
        self.prompts.append(req.messages[0]["content"])
        return ChatResponse(text=self.reply, backend=self.kind, model=self.model)


def _sample() -> Sample:
    return Sample(id="d1", dicom_id="d1", study_id="s1", subject_id="p1", split="test", view="PA",
                  image_path=Path("/x.jpg"), findings="ref", indication="Shortness of breath.",
                  priors=(Prior("s0", "Old report one.", 400.5), Prior("s-1", "Older report.", 800.0),
                          Prior("s2", "Recent report.", 2.25), Prior("s3", "Fourth.", 1000.0)))


def test_llm_composer_flags_control_indication_and_priors():
    feats = [F(1, 1.0, "Small left pleural effusion."), F(2, 0.5, "No pneumothorax."), F(3, 0.2, None)]
    for ind, pri in [(False, False), (True, False), (True, True)]:
        backend = Echo()
        comp = LLMComposer(LLMClient(backend), indication=ind, priors=pri).compose_many([(_sample(), feats)])[0]
        prompt = backend.prompts[0]
        assert ("1. (importance 1.00) This feature represents small left pleural effusion.\n"
                "2. (importance 0.50) This feature represents no pneumothorax.") in prompt
        assert ("Shortness of breath." in prompt) == ind
        assert ("Recent report." in prompt) == pri and "Fourth." not in prompt  # at most three priors
        assert "{" not in prompt  # every placeholder filled
        assert comp.method == "llm" and comp.text.startswith("Small left pleural effusion is present.")
        assert comp.sentences[0]["features"] == [1] and comp.sentences[1]["features"] == [2]
    # Most recent prior first, with its interval and no dates.
    assert prompt.index("Recent report.") < prompt.index("Old report one.") < prompt.index("Older report.")
    assert "2 days and 6 hours before" in prompt


def test_llm_composer_falls_back_when_the_reply_is_empty():
    comp = LLMComposer(LLMClient(Echo(reply="   "))).compose_many([(_sample(), [F(1, 1.0, "Left pacemaker.")])])[0]
    assert comp.text == "Left pacemaker." and comp.method.startswith("llm-free (fallback")


def test_interval_and_attribution_helpers():
    assert describe_interval(366.0) == "1 year, 1 day and 0 hours"
    assert describe_interval(0.5) == "0 days and 12 hours"
    assert attribute("There is a small left effusion.", [F(1, 1, "Small left pleural effusion."),
                                                       F(2, 1, "Mild cardiomegaly.")]) == [1]


def test_prior_reports_are_shown_whole_with_their_age():
    # The reader keeps the whole report (every section, one per line); the composer shows it
    # all, as the paper's composition prompt does, and falls back to the extracted text.
    whole = "EXAMINATION: Chest PA and lateral.\nINDICATION: Cough.\nCOMPARISON: None.\nFINDINGS: Lungs   are clear.\nIMPRESSION: Normal."
    sample = Sample(id="d1", dicom_id="d1", study_id="s1", subject_id="p1", split="test", view="PA",
                    image_path=Path("/x.jpg"), findings="ref",
                    priors=(Prior("s0", "Lungs are clear.", 2.6875, report=whole), Prior("s-1", "Old effusion.", 30.0)))
    backend = Echo()
    LLMComposer(LLMClient(backend), priors=True).compose_many([(sample, [F(1, 1.0, "Left pacemaker.")])])
    prompt = backend.prompts[0]
    assert ('<prior_report number="1" written="2 days and 16 hours before the current radiograph">\n'
            "EXAMINATION: Chest PA and lateral.\nINDICATION: Cough.\nCOMPARISON: None.\n"
            "FINDINGS: Lungs are clear.\nIMPRESSION: Normal.\n</prior_report>") in prompt
    assert ('<prior_report number="2" written="30 days and 0 hours before the current radiograph">\n'
            "Old effusion.\n</prior_report>") in prompt


def test_importance_is_normalised_over_the_features_shown():
    # The strongest active feature (activation 8) has no description and is not shown: the
    # shown scores are activation / the largest shown activation, so the top one is 1.0.
    feats = [ActiveFeature(7, 8.0, 1.0, None), ActiveFeature(1, 4.0, 0.5, "Small left pleural effusion."),
             ActiveFeature(2, 1.0, 0.125, "No pneumothorax."), ActiveFeature(3, 2.0, 0.25, "Left pacemaker.")]
    assert features_block(feats) == ("1. (importance 1.00) This feature represents small left pleural effusion.\n"
                                     "2. (importance 0.50) This feature represents left pacemaker.\n"
                                     "3. (importance 0.25) This feature represents no pneumothorax.")
    assert features_block([ActiveFeature(7, 8.0, 1.0, None)]) == ""


def test_descriptions_take_the_papers_form():
    assert feature_sentence("A small left pleural effusion.") == "This feature represents a small left pleural effusion."
    assert feature_sentence("AP view with an NG tube.") == "This feature represents AP view with an NG tube."
    assert feature_sentence("This feature represents  cardiomegaly.") == "This feature represents cardiomegaly."


def test_one_finding_one_severity_the_stronger_features():
    comp = compose_llm_free([F(1, 0.9, "Moderate cardiomegaly."), F(2, 0.5, "Mild cardiomegaly."),
                             F(3, 0.4, "Large left pleural effusion."), F(4, 0.3, "Small right pleural effusion.")])
    # Other words for a finding already stated merge into it; the other side is another finding.
    assert comp.text == "Moderate cardiomegaly. Large left pleural effusion. Small right pleural effusion."
    assert comp.sentences[0]["features"] == [1, 2]


def test_floor_drops_weak_abnormal_statements_but_not_normal_ones():
    feats = [F(1, 1.0, "Small left pleural effusion."), F(2, 0.35, "Endotracheal tube in standard position."),
             F(3, 0.1, "No pneumothorax.")]
    comp = compose_llm_free(feats, min_score=0.4)
    assert comp.text == "Small left pleural effusion. No pneumothorax."
    assert comp.dropped == [{"feature": 2, "statement": "Endotracheal tube in standard position.",
                             "reason": "importance 0.35 below min_score 0.4"}]


def test_pooled_evidence_of_agreeing_features_outweighs_one_stronger_feature():
    feats = [F(1, 0.75, "Heart size is normal."), F(2, 0.5, "Severe enlargement of the cardiac silhouette."),
             F(3, 0.4, "Moderate cardiomegaly."), F(4, 0.2, "Mild cardiomegaly.")]
    # max: the normal heart (0.75) beats each cardiomegaly feature (0.5, 0.4, 0.2) on its own.
    assert compose_llm_free(feats, pool="max").text == "Heart size is normal."
    # sum: 0.5 + 0.4 + 0.2 = 1.1 > 0.75, in the strongest feature's words; the normal heart is dropped.
    comp = compose_llm_free(feats, pool="sum", min_score=1.0)
    assert comp.text == "Severe enlargement of the cardiac silhouette."
    assert comp.sentences[0]["features"] == [2, 3, 4]
    assert comp.dropped == [{"feature": 1, "statement": "Heart size is normal.",
                             "reason": "contradicts the higher-scoring feature(s) [2, 3, 4]"}]
    # ... and the pooled score is what the floor sees: 1.1 < 1.2.
    assert compose_llm_free(feats, pool="sum", min_score=1.2).text == "Heart size is normal."
