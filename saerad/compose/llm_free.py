"""LLM-free report composition: the active features' descriptions joined into findings.

The paper's Appendix F notes that reports can be written without an LLM by concatenating
the descriptions of the active features; this composer does that with rules so the result
reads like a report rather than a list, and states a finding only when the features carry
enough evidence for it:

1. Evidence: each feature's description is split into statements. With `pool="sum"` (the
   system's default), statements that make the same claim are one statement whose score is
   the sum of their features' importance scores, written in the words of the strongest of
   them. The claim of an abnormal statement is the findings and sides it asserts
   ("Moderate cardiomegaly.", "Mild cardiomegaly." and "Severe enlargement of the cardiac
   silhouette." are one claim); of a normal statement, the findings it calls absent; of any
   other, its content words. Three features that weakly agree can so outweigh one strong
   feature that disagrees. `pool="max"` keeps each feature's own score (no pooling).
2. Importance order: statements are taken strongest first.
3. Floor: an abnormal statement is written only if its score is at least `min_score`.
   Weakly firing features are where the labels are least reliable: a feature whose strongest
   training images all show a pacemaker also fires, weakly, on images without one. Normal
   statements are exempt: they assert no finding, and a contradicting abnormal statement
   that scores higher still removes them.
4. Contradictions: a statement that contradicts an already kept one (same finding, opposite
   polarity, overlapping side: "no pleural effusion" vs "small left pleural effusion") is
   dropped, so the higher-scoring of the two survives.
5. Duplicates: a statement whose words (minus filler) equal, contain or are contained in those
   of a kept one with no contradiction is merged into it, and so is an abnormal statement
   about a finding and side that a kept one already asserts (one finding, one severity: the
   stronger one's); the kept sentence lists all their features as its sources.

Abnormal statements come first, in score order; normal statements (only absent or normal
findings, e.g. "Heart size is normal.") close the report, and are there only if nothing kept
contradicts them. At most `max_sentences` sentences are written. Every statement left out is
listed in `Composition.dropped` with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from saerad.features.statements import as_sentence, is_normal, split_sentences, statement_key, topics

_FILLER = frozenset("a an the is are of in at there seen noted with and to be has have been".split())


@dataclass
class ActiveFeature:
    id: int
    activation: float  # f_i = h_i ||W_dec[:, i]||
    score: float  # importance in [0, 1]: activation / max activation of the image
    description: str | None  # None: the feature has no label

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "activation": round(self.activation, 6), "score": round(self.score, 6),
                "description": self.description}


@dataclass
class Composition:
    text: str
    sentences: list[dict[str, Any]]  # {"text", "features": [ids]}
    dropped: list[dict[str, Any]] = field(default_factory=list)  # {"feature", "statement", "reason"}
    method: str = "llm-free"


def content_words(text: str) -> frozenset[str]:
    return frozenset(w for w in statement_key(text).split() if w not in _FILLER)


@dataclass
class _Statement:
    """One finding statement with the features that state it; `score` is their pooled evidence."""

    text: str
    words: frozenset[str]
    topics: set
    normal: bool
    features: list[int]
    score: float


def _asserted(tps: set) -> frozenset:
    """(finding, side) pairs a statement asserts present."""
    return frozenset((t.finding, t.side) for t in tps if t.present)


def _claim(st: _Statement) -> frozenset:
    """What a statement says, for pooling: the findings (and sides) it asserts present; for a
    normal statement, the findings it calls absent; else its content words."""
    asserted = _asserted(st.topics)
    if asserted:
        return asserted
    if st.normal:
        return frozenset(st.topics)
    return st.words


def _statements(features: Sequence[ActiveFeature], pool: str) -> list[_Statement]:
    """The features' statements, strongest first; with pool="sum", statements that make the same
    claim are one statement whose score is the sum of its features' scores (its text: the
    strongest feature's)."""
    out: list[_Statement] = []
    by_claim: dict[frozenset, _Statement] = {}
    for f in sorted(features, key=lambda f: (-f.score, f.id)):
        if not f.description:
            continue
        for sentence in split_sentences(f.description):
            text = as_sentence(sentence)
            words = content_words(text)
            if not words:
                continue
            tps = topics(text)
            st = _Statement(text, words, tps, is_normal(text), [f.id], f.score)
            if pool == "sum":
                same = by_claim.setdefault(_claim(st), st)
                if same is not st:
                    if f.id not in same.features:
                        same.features.append(f.id)
                        same.score += f.score
                    continue
            out.append(st)
    # Pooling can reorder: three features that weakly agree outweigh one strong feature.
    return sorted(out, key=lambda st: -st.score) if pool == "sum" else out


def compose_llm_free(features: Sequence[ActiveFeature], max_sentences: int | None = 6,
                     min_score: float = 0.0, pool: str = "max") -> Composition:
    if pool not in ("max", "sum"):
        raise ValueError(f"pool must be 'max' or 'sum', got {pool!r}")
    kept: list[_Statement] = []
    dropped: list[dict[str, Any]] = []

    def drop(st: _Statement, reason: str) -> None:
        dropped.extend({"feature": fid, "statement": st.text, "reason": reason} for fid in st.features)

    for st in _statements(features, pool):
        if not st.normal and st.score < min_score:
            drop(st, f"importance {st.score:.2f} below min_score {min_score:g}")
            continue
        clash = next((k for k in kept if any(t.conflicts(u) for t in st.topics for u in k.topics)), None)
        if clash is not None:
            drop(st, f"contradicts the higher-scoring feature(s) {clash.features}")
            continue
        dup = next((k for k in kept if st.words <= k.words or k.words <= st.words), None)
        if dup is None and not st.normal:
            dup = next((k for k in kept if _asserted(st.topics) & _asserted(k.topics)), None)
        if dup is not None:
            dup.features.extend(fid for fid in st.features if fid not in dup.features)
            continue
        kept.append(st)
    ordered = [k for k in kept if not k.normal] + [k for k in kept if k.normal]
    if max_sentences is not None and len(ordered) > max_sentences:
        for k in ordered[max_sentences:]:
            drop(k, "beyond max_sentences")
        ordered = ordered[:max_sentences]
    sentences = [{"text": k.text, "features": k.features} for k in ordered]
    return Composition(" ".join(s["text"] for s in sentences), sentences, dropped)
