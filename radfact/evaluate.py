"""The RadFact pipeline: reports -> phrases -> entailment verdicts -> per-study scores.

    client = make_client("openai:http://gpu:8000/v1", "meta-llama/Meta-Llama-3-70B-Instruct",
                         cache_path="runs/llm-cache.sqlite")
    results = evaluate(studies, client, RadFactConfig(mode="batched"))
    scores.aggregate([r.score for r in results])

All phrase requests go out as one batch, then all entailment requests as another, so the
client's concurrency limit keeps the servers busy. Every answer is cached as it arrives
(bench.llm), so a killed run, run again, only makes the calls it had not made.

Failures are never scores: a request the judge did not answer (after the client's
retries) fails its study (`StudyResult.error`, `radfact_failed` in its row), and the study
is left out of every mean rather than counted as "not entailed". Failed requests are not
cached, so a run repeated once the judge is back asks them again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from bench.errors import BenchError
from bench.llm import ChatRequest, LLMClient
from radfact.entailment import (MODES, EntailmentPrompts, Verdict, batched_request, faithful_request, parse_batched,
                                parse_faithful)
from radfact.phrases import PhrasePrompts, parse_phrases, phrase_request
from radfact.scores import StudyScore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Study:
    """One study to score: report text, or phrases already split (then no phrasing call)."""

    id: str
    reference: str | None = None
    prediction: str | None = None
    reference_phrases: tuple[str, ...] | None = None
    prediction_phrases: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.reference is None and self.reference_phrases is None:
            raise BenchError(f"study {self.id}: give a reference report or reference_phrases")
        if self.prediction is None and self.prediction_phrases is None:
            raise BenchError(f"study {self.id}: give a prediction or prediction_phrases")


@dataclass(frozen=True)
class RadFactConfig:
    """What determines RadFact's numbers (besides the judge model), for manifests too."""

    mode: str = "faithful"  # faithful | batched
    phrase_examples: Path | None = None  # None: ours (radfact/prompts); or a microsoft/RadFact file
    entailment_examples: Path | None = None
    n_phrase_examples: int | None = None  # keep only the first n (short contexts)
    n_entailment_examples: int | None = None
    phrase_max_tokens: int = 1024
    entailment_max_tokens: int = 256  # faithful mode; batched mode scales with the phrase count

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BenchError(f"RadFact mode {self.mode!r} is unknown; use one of {', '.join(MODES)}")

    def describe(self) -> dict:
        return {"mode": self.mode,
                "phrase_examples": str(self.phrase_examples) if self.phrase_examples else "radfact/prompts (ours)",
                "entailment_examples": str(self.entailment_examples) if self.entailment_examples
                else "radfact/prompts (ours)",
                "n_phrase_examples": self.n_phrase_examples, "n_entailment_examples": self.n_entailment_examples}


@dataclass
class StudyResult:
    id: str
    prediction_phrases: list[str] | None
    reference_phrases: list[str] | None
    precision_verdicts: list[Verdict] = field(default_factory=list)  # prediction phrases vs reference
    recall_verdicts: list[Verdict] = field(default_factory=list)  # reference phrases vs prediction
    score: StudyScore = field(default_factory=lambda: StudyScore(0, 0, 0, 0))
    error: str | None = None  # why the judge gave no answer to one of the study's requests

    @property
    def failed(self) -> bool:
        """The judge did not answer this study: it is not scored (see radfact.scores)."""
        return self.error is not None

    def as_dict(self) -> dict:
        def verdicts(vs: list[Verdict]) -> list[dict]:
            return [{"entailed": v.entailed, "evidence": list(v.evidence), "failed": v.failed,
                     "rewritten": v.rewritten, "evidence_mismatch": v.evidence_mismatch} for v in vs]

        return {"id": self.id, "prediction_phrases": self.prediction_phrases,
                "reference_phrases": self.reference_phrases,
                "precision_verdicts": verdicts(self.precision_verdicts),
                "recall_verdicts": verdicts(self.recall_verdicts), "error": self.error, **self.score.row()}


@dataclass
class _Phrased:
    """One study after phrasing: phrases per side (None: the answer could not be read),
    how many phrasing answers it used, and the error of a phrasing request that got none."""

    prediction: list[str] | None = None
    reference: list[str] | None = None
    answers: int = 0
    error: str | None = None


def _split(client: LLMClient, studies: Sequence[Study], prompts: PhrasePrompts, cfg: RadFactConfig,
           progress: bool) -> list[_Phrased]:
    """Phrases of every prediction and reference."""
    texts: list[str] = []
    slots: list[tuple[int, int]] = []  # (study, side 0 = prediction / 1 = reference)
    sides: list[list[list[str] | None]] = [[None, None] for _ in studies]
    out = [_Phrased() for _ in studies]
    for i, s in enumerate(studies):
        for side, given, text in ((0, s.prediction_phrases, s.prediction), (1, s.reference_phrases, s.reference)):
            if given is not None:
                sides[i][side] = [p for p in given if p.strip()]
            elif not (text or "").strip():
                sides[i][side] = []  # an empty report has no phrases; no call needed
            else:
                texts.append(text or "")
                slots.append((i, side))
    if texts:
        answers = client.chat_many([phrase_request(prompts, t, cfg.phrase_max_tokens) for t in texts],
                                   progress=progress, description="RadFact phrases")
        for (i, side), resp in zip(slots, answers):
            if not resp.ok:
                # No answer is not an unreadable answer: the study fails instead of being
                # dropped as invalid (or, worse, scored).
                out[i].error = out[i].error or resp.error
                continue
            out[i].answers += 1
            sides[i][side] = parse_phrases(resp)
    for o, (pred, ref) in zip(out, sides):
        o.prediction, o.reference = pred, ref
    return out


def _requests(prompts: EntailmentPrompts, premise: list[str], hyps: list[str], cfg: RadFactConfig) -> list[ChatRequest]:
    if not hyps or not premise:
        # Nothing can be entailed by an empty premise list, and an empty hypothesis list
        # needs no verdict: no call either way.
        return []
    if cfg.mode == "batched":
        return [batched_request(prompts, premise, hyps)]
    return [faithful_request(prompts, premise, h, cfg.entailment_max_tokens) for h in hyps]


def _read(answers: list, premise: list[str], hyps: list[str], cfg: RadFactConfig) -> list[Verdict]:
    if not hyps:
        return []
    if not premise:
        return [Verdict(entailed=False)] * len(hyps)
    if cfg.mode == "batched":
        return parse_batched(answers[0], premise, len(hyps))
    return [parse_faithful(a, premise, h) for a, h in zip(answers, hyps)]


def _judged(premise: list[str], hyps: list[str]) -> int:
    """Verdicts the judge gives for one direction (none against an empty premise list)."""
    return len(hyps) if premise else 0


def score_study(precision: list[Verdict], recall: list[Verdict], phrase_failures: int = 0,
                judgements: int = 0) -> StudyScore:
    both = precision + recall
    invalid = phrase_failures > 0 or any(v.evidence_mismatch for v in both)
    return StudyScore(candidate_entailed=sum(v.entailed for v in precision), n_candidate=len(precision),
                      reference_entailed=sum(v.entailed for v in recall), n_reference=len(recall),
                      llm_failures=sum(v.failed for v in both), phrase_rewrites=sum(v.rewritten for v in both),
                      invalid=invalid, phrase_failures=phrase_failures, judgements=judgements)


def evaluate(studies: Sequence[Study], client: LLMClient, cfg: RadFactConfig = RadFactConfig(),
             phrase_prompts: PhrasePrompts | None = None, entailment_prompts: EntailmentPrompts | None = None,
             progress: bool = True) -> list[StudyResult]:
    """Per-study RadFact results, in input order.

    A study any of whose requests got no answer from the judge (after the client's
    retries) comes back failed (`error` set, `score` neutral); the others are scored.
    Answers that came back but cannot be read follow the reference implementation
    (not entailed, or the study invalid) and are counted."""
    ids = [s.id for s in studies]
    if len(set(ids)) != len(ids):
        raise BenchError("RadFact input has duplicate study ids; each study must appear once")
    pp = phrase_prompts or PhrasePrompts.load(cfg.phrase_examples, cfg.n_phrase_examples)
    ep = entailment_prompts or EntailmentPrompts.load(cfg.entailment_examples, cfg.n_entailment_examples)
    phrased = _split(client, studies, pp, cfg, progress)

    plan: list[tuple[int, int, int, int]] = []  # per study: precision slice, recall slice into `reqs`
    reqs: list[ChatRequest] = []
    for ph in phrased:
        if ph.error is not None or ph.prediction is None or ph.reference is None:
            plan.append((0, 0, 0, 0))  # failed or invalid already: no entailment calls
            continue
        a = len(reqs)
        reqs += _requests(ep, ph.reference, ph.prediction, cfg)
        b = len(reqs)
        reqs += _requests(ep, ph.prediction, ph.reference, cfg)
        plan.append((a, b, b, len(reqs)))
    answers = client.chat_many(reqs, progress=progress, description=f"RadFact entailment ({cfg.mode})") if reqs else []

    results = []
    for s, ph, (a, b, c, d) in zip(studies, phrased, plan):
        pred, ref = ph.prediction, ph.reference
        error = ph.error or next((r.error for r in answers[a:d] if not r.ok), None)
        if error is not None:
            # Per study at debug level: with the judge down every study fails, and one
            # summary line (below) says so.
            log.debug("study %s: the judge gave no answer (%s); the study is failed, not scored", s.id, error)
            results.append(StudyResult(s.id, pred, ref, score=StudyScore.failure(), error=error))
            continue
        failures = (pred is None) + (ref is None)
        if failures:
            log.warning("study %s: a report could not be split into phrases; the study is invalid", s.id)
            results.append(StudyResult(s.id, pred, ref, score=score_study([], [], failures, ph.answers)))
            continue
        assert pred is not None and ref is not None
        prec = _read(answers[a:b], ref, pred, cfg)
        rec = _read(answers[c:d], pred, ref, cfg)
        judged = ph.answers + _judged(ref, pred) + _judged(pred, ref)
        results.append(StudyResult(s.id, pred, ref, prec, rec, score_study(prec, rec, 0, judged)))
    failed = [r for r in results if r.failed]
    if failed:
        log.warning("RadFact: the judge gave no answer for %d of %d studies (first: %s: %s); they are failed, "
                    "not scored", len(failed), len(results), failed[0].id, failed[0].error)
    return results
