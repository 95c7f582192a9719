"""The RadFact pipeline: reports -> phrases -> entailment verdicts -> per-study scores.

    client = make_client("openai:http://gpu:8000/v1", "meta-llama/Meta-Llama-3-70B-Instruct",
                         cache_path="runs/llm-cache.sqlite")
    results = evaluate(studies, client, RadFactConfig(mode="batched"))
    scores.aggregate([r.score for r in results])

All phrase requests go out as one batch, then all entailment requests as another, so the
client's concurrency limit keeps the servers busy. Every answer is cached as it arrives
(bench.llm), so a killed run, run again, only makes the calls it had not made.
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

    def as_dict(self) -> dict:
        def verdicts(vs: list[Verdict]) -> list[dict]:
            return [{"entailed": v.entailed, "evidence": list(v.evidence), "failed": v.failed,
                     "rewritten": v.rewritten, "evidence_mismatch": v.evidence_mismatch} for v in vs]

        return {"id": self.id, "prediction_phrases": self.prediction_phrases,
                "reference_phrases": self.reference_phrases,
                "precision_verdicts": verdicts(self.precision_verdicts),
                "recall_verdicts": verdicts(self.recall_verdicts), **self.score.row()}


def _split(client: LLMClient, studies: Sequence[Study], prompts: PhrasePrompts, cfg: RadFactConfig,
           progress: bool) -> tuple[list[list[str] | None], list[list[str] | None]]:
    """Phrases of every prediction and reference (None where phrasing failed)."""
    texts: list[str] = []
    slots: list[tuple[int, int]] = []  # (study, side 0 = prediction / 1 = reference)
    out: list[list[list[str] | None]] = [[None, None] for _ in studies]
    for i, s in enumerate(studies):
        for side, given, text in ((0, s.prediction_phrases, s.prediction), (1, s.reference_phrases, s.reference)):
            if given is not None:
                out[i][side] = [p for p in given if p.strip()]
            elif not (text or "").strip():
                out[i][side] = []  # an empty report has no phrases; no call needed
            else:
                texts.append(text or "")
                slots.append((i, side))
    if texts:
        answers = client.chat_many([phrase_request(prompts, t, cfg.phrase_max_tokens) for t in texts],
                                   progress=progress, description="RadFact phrases")
        for (i, side), resp in zip(slots, answers):
            out[i][side] = parse_phrases(resp)
    return [o[0] for o in out], [o[1] for o in out]


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


def score_study(precision: list[Verdict], recall: list[Verdict], phrase_failures: int = 0) -> StudyScore:
    both = precision + recall
    invalid = phrase_failures > 0 or any(v.evidence_mismatch for v in both)
    return StudyScore(candidate_entailed=sum(v.entailed for v in precision), n_candidate=len(precision),
                      reference_entailed=sum(v.entailed for v in recall), n_reference=len(recall),
                      llm_failures=sum(v.failed for v in both), phrase_rewrites=sum(v.rewritten for v in both),
                      invalid=invalid, phrase_failures=phrase_failures)


def evaluate(studies: Sequence[Study], client: LLMClient, cfg: RadFactConfig = RadFactConfig(),
             phrase_prompts: PhrasePrompts | None = None, entailment_prompts: EntailmentPrompts | None = None,
             progress: bool = True) -> list[StudyResult]:
    """Per-study RadFact results, in input order."""
    ids = [s.id for s in studies]
    if len(set(ids)) != len(ids):
        raise BenchError("RadFact input has duplicate study ids; each study must appear once")
    pp = phrase_prompts or PhrasePrompts.load(cfg.phrase_examples, cfg.n_phrase_examples)
    ep = entailment_prompts or EntailmentPrompts.load(cfg.entailment_examples, cfg.n_entailment_examples)
    preds, refs = _split(client, studies, pp, cfg, progress)

    plan: list[tuple[int, int, int, int]] = []  # per study: precision slice, recall slice into `reqs`
    reqs: list[ChatRequest] = []
    for pred, ref in zip(preds, refs):
        if pred is None or ref is None:
            plan.append((0, 0, 0, 0))
            continue
        a = len(reqs)
        reqs += _requests(ep, ref, pred, cfg)
        b = len(reqs)
        reqs += _requests(ep, pred, ref, cfg)
        plan.append((a, b, b, len(reqs)))
    answers = client.chat_many(reqs, progress=progress, description=f"RadFact entailment ({cfg.mode})") if reqs else []

    results = []
    for s, pred, ref, (a, b, c, d) in zip(studies, preds, refs, plan):
        failures = (pred is None) + (ref is None)
        if failures:
            log.warning("study %s: a report could not be split into phrases; the study is invalid", s.id)
            results.append(StudyResult(s.id, pred, ref, score=score_study([], [], failures)))
            continue
        assert pred is not None and ref is not None
        prec = _read(answers[a:b], ref, pred, cfg)
        rec = _read(answers[c:d], pred, ref, cfg)
        results.append(StudyResult(s.id, pred, ref, prec, rec, score_study(prec, rec)))
    return results
