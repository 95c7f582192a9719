"""LLM-free report composition: the active features' descriptions joined into findings.

The paper's Appendix F notes that reports can be written without an LLM by concatenating
the descriptions of the active features; this composer does that with three rules so the
result reads like a report rather than a list:

1. Importance order: statements are taken from the feature with the highest score first.
2. Contradictions: a statement that contradicts an already kept one (same finding, opposite
   polarity, overlapping side: "no pleural effusion" vs "small left pleural effusion") is
   dropped, so the higher-scoring of the two survives.
3. Duplicates: a statement whose words (minus filler) equal, contain or are contained in those
   of a kept one with no contradiction is merged into it; the kept sentence lists both
   features as its sources.

Abnormal statements come first, in importance order; normal statements (only absent or
normal findings, e.g. "Heart size is normal.") close the report, and are there only if
nothing kept contradicts them. At most `max_sentences` sentences are written.
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
class _Kept:
    text: str
    words: frozenset[str]
    topics: set
    normal: bool
    features: list[int]
    order: int


def compose_llm_free(features: Sequence[ActiveFeature], max_sentences: int | None = 6) -> Composition:
    ranked = sorted(features, key=lambda f: (-f.score, f.id))
    kept: list[_Kept] = []
    dropped: list[dict[str, Any]] = []
    for f in ranked:
        if not f.description:
            continue
        for sentence in split_sentences(f.description):
            text = as_sentence(sentence)
            words = content_words(text)
            if not words:
                continue
            tps = topics(text)
            clash = next((k for k in kept if any(t.conflicts(u) for t in tps for u in k.topics)), None)
            if clash is not None:
                dropped.append({"feature": f.id, "statement": text,
                                "reason": f"contradicts the higher-scoring feature(s) {clash.features}"})
                continue
            dup = next((k for k in kept if words <= k.words or k.words <= words), None)
            if dup is not None:
                if f.id not in dup.features:
                    dup.features.append(f.id)
                continue
            kept.append(_Kept(text, words, tps, is_normal(text), [f.id], len(kept)))
    ordered = [k for k in kept if not k.normal] + [k for k in kept if k.normal]
    if max_sentences is not None and len(ordered) > max_sentences:
        for k in ordered[max_sentences:]:
            dropped.extend({"feature": fid, "statement": k.text, "reason": "beyond max_sentences"}
                           for fid in k.features)
        ordered = ordered[:max_sentences]
    sentences = [{"text": k.text, "features": k.features} for k in ordered]
    return Composition(" ".join(s["text"] for s in sentences), sentences, dropped)
