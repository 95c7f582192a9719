"""RadGraph rewards (F1-RadGraph, Delbrouck et al. 2022) computed from RadGraph annotations.

An annotation is one report's entry in the radgraph package's output:

    {"text": "...", "entities": {"1": {"tokens": "edema", "label": "Observation::definitely present",
                                       "start_ix": 3, "end_ix": 3, "relations": [["located_at", "2"]]},
                                 ...}}

Each reward level turns the entities of a report into a *set* of keys, then scores the
prediction's set against the reference's with precision |P & R| / |P|, recall |P & R| / |R|
and F1 = 2PR / (P + R) (0 when P + R = 0). What a key is:

- simple:   (tokens, label) for every entity;
- partial:  (tokens, label) for an entity without relations, (tokens, label, True) for one
            with at least one outgoing relation; so an entity only matches an entity of the
            same text and label that also does (or also does not) take part in a relation.
            RGER = this level (docs/metrics.md, RGER);
- complete: (tokens, label) for an entity without relations; for an entity with relations
            one key per relation: (tokens, label, relation type, target's tokens), with both
            token strings lower-cased.

Conventions of the radgraph package (pinned version: PINNED_VERSION) that these follow:
- keys are sets: an entity repeated in a report counts once;
- token strings are compared as written, except that the "complete" level lower-cases the
  two token strings of a relation key (and nothing else);
- if either report has no entities, every level is 0 (also when both have none);
- an empty report text is not annotated and scores 0 (see bench.metrics.radgraph);
- the corpus score is the plain mean of the per-report values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from bench.errors import BenchError

LEVELS: tuple[str, ...] = ("simple", "partial", "complete")
PINNED_VERSION = "0.1.18"  # the radgraph release these rules and the annotator are pinned to

Annotation = Mapping[str, Any]


class AnnotationError(BenchError):
    """A RadGraph annotation that is not in the radgraph package's output format."""


@dataclass(frozen=True)
class Rewards:
    simple: float
    partial: float
    complete: float

    def as_dict(self) -> dict[str, float]:
        return {"simple": self.simple, "partial": self.partial, "complete": self.complete}


def _entities(annotation: Annotation) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(annotation, Mapping) or not isinstance(annotation.get("entities"), Mapping):
        raise AnnotationError("a RadGraph annotation must be a mapping with an 'entities' mapping "
                              f"(radgraph's output for one report), got {type(annotation).__name__}"
                              + (f" with keys {sorted(annotation)[:5]}" if isinstance(annotation, Mapping) else ""))
    entities = annotation["entities"]
    for eid, entity in entities.items():
        if not isinstance(entity, Mapping) or not {"tokens", "label", "relations"} <= set(entity):
            raise AnnotationError(f"RadGraph entity {eid!r} must have 'tokens', 'label' and 'relations', "
                                  f"got {entity!r}")
        for relation in entity["relations"]:
            if not isinstance(relation, (list, tuple)) or len(relation) != 2:
                raise AnnotationError(f"RadGraph entity {eid!r}: a relation must be [type, target id], "
                                      f"got {relation!r}")
            if str(relation[1]) not in entities:
                raise AnnotationError(f"RadGraph entity {eid!r} relates to entity {relation[1]!r}, which the "
                                      f"annotation does not contain (ids: {sorted(entities)[:10]})")
    return entities


def entity_keys(annotation: Annotation, level: str) -> set[tuple]:
    """The set of keys one report's annotation contributes at a reward level."""
    if level not in LEVELS:
        raise ValueError(f"unknown RadGraph reward level {level!r}; choose one of {', '.join(LEVELS)}")
    entities = _entities(annotation)
    keys: set[tuple] = set()
    for entity in entities.values():
        tokens, label, relations = entity["tokens"], entity["label"], entity["relations"]
        if level == "simple" or not relations:
            keys.add((tokens, label))
        elif level == "partial":
            keys.add((tokens, label, True))
        else:  # complete
            for rel_type, target in relations:
                keys.add((tokens.lower(), label, rel_type, entities[str(target)]["tokens"].lower()))
    return keys


def set_f1(predicted: set, reference: set) -> float:
    """F1 of two key sets as the radgraph package computes it (0 when undefined)."""
    if not predicted or not reference:
        return 0.0
    common = len(predicted & reference)
    precision = common / len(predicted)
    recall = common / len(reference)
    # Same arithmetic as the reference (2PR / (P + R), not 2c / (|P| + |R|)), so that values
    # agree to the last bit and not merely to rounding.
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def reward(prediction: Annotation, reference: Annotation, level: str) -> float:
    """One report's reward at `level`; 0 if either annotation has no entities."""
    if level not in LEVELS:
        raise ValueError(f"unknown RadGraph reward level {level!r}; choose one of {', '.join(LEVELS)}")
    if not _entities(prediction) or not _entities(reference):
        return 0.0
    return set_f1(entity_keys(prediction, level), entity_keys(reference, level))


def rewards(prediction: Annotation, reference: Annotation) -> Rewards:
    """All three levels for one report pair."""
    return Rewards(*(reward(prediction, reference, level) for level in LEVELS))


def mean_reward(values: list[float]) -> float:
    """The corpus score: plain mean of per-report rewards (NaN for no reports)."""
    return math.fsum(values) / len(values) if values else math.nan
