"""A rule-based CheXpert-style labeller, and the F1 metric built on it ("chexpert-rules").

It is NOT CheXbert and its numbers are not the paper's CheXbert numbers: it exists so that a
clinical-label F1 can be computed where CheXbert's weights are unavailable, under its own
metric name and columns (rules_ma5, ...). The phrase lists are our own; the procedure follows
the idea of the CheXpert labeller (Irvin et al. 2019): find mentions of each observation,
then decide per mention whether it is negated or uncertain, then aggregate per report.

Per report:
1. Normalise (lower case, one space) and split into sentences at . ! ? ; and each sentence
   into clauses at contrastive words ("but", "however", "although", ...) and at ", the" /
   "and there" style joins, so that a cue in one clause never reaches into the next.
2. Find cues in each clause, longest phrase first and without overlaps, so that
   "cannot be excluded" is a hedge and not a negation, and "no change in" is no cue at all:
   - forward cues act on mentions after them in the clause ("no", "without", "possible");
     the nearest preceding one wins ("possible effusion, no pneumothorax");
   - backward cues act on a mention shortly before them, with no comma in between
     ("pneumothorax is not seen", "pneumonia cannot be excluded");
   - two-way cues ("likely", "resolved", "versus") act forward, and backward only when they
     close the clause after a mention ("atelectasis is likely").
3. Mentions: direct phrases ("pleural effusion", "pneumothorax") and attribute phrases
   ("heart size", "mediastinal contours", "costophrenic angles") that only count with a
   qualifier near them: a normal one makes the mention negative ("heart size is normal"),
   an abnormal one makes it a finding that cues then act on ("heart is possibly enlarged").
4. A mention is uncertain if a hedge acts on it, else negative if a negation does, else
   positive. A report's label per observation is positive if any mention is positive, else
   uncertain, else negative, else blank. No Finding is positive when no observation other
   than Support Devices is positive or uncertain, and blank otherwise.
Class codes are CheXbert's (bench.metrics.f1: BLANK, POSITIVE, NEGATIVE, UNCERTAIN).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bench.metrics.f1 import BLANK, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN, LabelF1Metric

# -- phrase lists (regex fragments; word boundaries are added around each) -------------

# Direct mentions per observation.
MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"enlarged cardiomediastinum", r"cardiomediastinal enlargement", r"mediastinal (?:widening|enlargement)",
    ),
    "Cardiomegaly": (
        r"cardiomegaly", r"cardiac enlargement", r"enlarged heart", r"heart enlargement",
    ),
    "Lung Opacity": (
        r"opacit(?:y|ies)", r"opacification", r"opacified", r"infiltrates?", r"infiltration", r"haziness",
        r"hazy", r"air ?space (?:disease|process|opacit(?:y|ies))", r"densit(?:y|ies)", r"ground[- ]glass",
        r"reticular(?:ity)?", r"reticulation", r"interstitial (?:markings?|abnormalit(?:y|ies)|disease|opacit(?:y|ies))",
        r"scarring", r"fibrosis", r"fibrotic changes?",
    ),
    "Lung Lesion": (
        r"nodules?", r"nodular", r"masse?s?", r"lesions?", r"tumou?rs?", r"neoplasms?", r"malignan(?:cy|cies)",
        r"carcinoma", r"metastas(?:is|es)", r"metastatic disease", r"cavitary", r"cavitation",
    ),
    "Edema": (
        r"edema", r"oedema", r"(?:pulmonary |vascular |venous )congestion", r"chf", r"congestive heart failure",
        r"heart failure", r"fluid overload", r"volume overload", r"cephalization", r"kerley b lines",
    ),
    "Consolidation": (r"consolidations?", r"consolidative", r"consolidated"),
    "Pneumonia": (
        r"pneumonias?", r"bronchopneumonia", r"pneumonitis", r"infections?", r"infectious(?: process)?",
        r"aspiration",
    ),
    "Atelectasis": (r"atelectas[ie]s", r"atelectatic", r"collapsed?", r"volume loss"),
    "Pneumothorax": (r"pneumothora(?:x|ces)", r"hydropneumothorax", r"ptx"),
    "Pleural Effusion": (
        r"(?:pleural )?effusions?", r"pleural fluid", r"hydrothorax", r"fluid in the (?:pleural space|fissure)",
    ),
    "Pleural Other": (
        r"pleural (?:thickening|plaques?|calcifications?|scarring|fibrosis)", r"thickening of the pleura",
        r"fibrothorax", r"apical (?:pleural )?caps?",
    ),
    "Fracture": (r"fractures?", r"fractured", r"fx"),
    "Support Devices": (
        r"(?:endotracheal|tracheostomy|chest|feeding|enteric|nasogastric|orogastric|ng|og|et|dobhoff) tubes?",
        r"tubes?", r"catheters?", r"picc(?: lines?)?", r"(?:central|venous|arterial|jugular|subclavian|midline|"
        r"dialysis|picc|port) lines?", r"lines and tubes", r"tubes and lines", r"pacemakers?", r"pacers?",
        r"pacing (?:wires?|leads?)", r"(?:aicd|icd|defibrillator)", r"loop recorder", r"port-?a-?cath",
        r"(?:chest |power )?port", r"wires?", r"sternotomy", r"(?:surgical )?clips?", r"coils?", r"stents?",
        r"valve (?:replacement|prosthesis)", r"prosthetic valve", r"prosthes[ie]s", r"hardware", r"screws?",
        r"drains?", r"devices?", r"swan[- ]ganz", r"balloon pump", r"iabp", r"lvad", r"filter",
    ),
}

# Text that contains a mention phrase but is not that observation (blanked before matching).
EXCLUSIONS: dict[str, tuple[str, ...]] = {
    "Pleural Effusion": (r"pericardial effusions?", r"joint effusions?", r"subpulmonic effusion free"),
    "Lung Lesion": (r"mass effect", r"soft tissue densit(?:y|ies)"),
    "Lung Opacity": (r"bone densit(?:y|ies)", r"soft tissue densit(?:y|ies)"),
    "Edema": (r"soft tissue edema", r"subcutaneous edema"),
    "Atelectasis": (r"vertebral (?:body )?collapse", r"compression collapse"),
    "Support Devices": (r"kerley b lines", r"septal lines", r"pleural line", r"skin folds?"),
    "Pneumonia": (r"aspiration precautions",),
    "Cardiomegaly": (r"(?:congestive )?heart failure",),
}

# Attribute mentions: only count together with a qualifier of their kind.
ATTRIBUTES: dict[str, tuple[tuple[str, ...], str]] = {
    "Cardiomegaly": ((r"heart size", r"size of the heart", r"cardiac size", r"cardiac silhouette",
                      r"cardiac contours?", r"cardiac shadow", r"heart", r"cardiac and mediastinal (?:contours?|silhouettes?)"),
                     "size"),
    "Enlarged Cardiomediastinum": ((r"cardiomediastinal (?:silhouette|contours?)", r"mediastinal (?:silhouette|contours?)",
                                    r"mediastinum", r"hilar and mediastinal contours", r"mediastinal and hilar contours",
                                    r"cardiac and mediastinal (?:contours?|silhouettes?)", r"cardiomediastinal"),
                                   "size"),
    "Pleural Effusion": ((r"costophrenic (?:angles?|sulci|sulcus)",), "angle"),
}
QUALIFIERS: dict[str, dict[str, tuple[str, ...]]] = {
    # kind -> {"normal": ..., "abnormal": ..., "hedged": ...}
    "size": {
        "normal": (r"normal", r"within normal limits", r"unremarkable", r"not (?:significantly )?enlarged",
                   r"not widened", r"top[- ]normal", r"upper (?:limits? of )?normal", r"normal in size"),
        "abnormal": (r"enlarged", r"enlargement", r"widened", r"widening", r"prominent", r"prominence",
                     r"increased in size", r"large"),
        "hedged": (r"borderline(?: enlarged)?",),
    },
    "angle": {
        "normal": (r"sharp(?:ly defined)?", r"clear", r"normal", r"preserved", r"not blunted"),
        "abnormal": (r"blunted", r"blunting"),
        "hedged": (),
    },
}

# Cues. "pseudo" phrases look like cues but are none; matching them first blanks them out.
PSEUDO = (
    r"no (?:significant |substantial |appreciable |other |interval |significant interval )?change",
    r"not (?:significantly )?changed", r"without (?:significant |interval )?change", r"no increase",
    r"no decrease", r"not only", r"gram negative", r"unchanged",
)
HEDGE_FORWARD = (
    r"possible", r"probable", r"may", r"might", r"could", r"cannot (?:be )?(?:exclude|rule out)",
    r"can ?not (?:exclude|rule out)", r"can't (?:exclude|rule out)", r"difficult to (?:exclude|rule out)",
    r"(?:is |are )?suggestive of", r"suggest(?:s|ing)?", r"suspicious (?:for|of)", r"suspicion (?:for|of)",
    r"concerning for", r"concern for", r"question of", r"questionable", r"presumed", r"presumably",
    r"suspected", r"differential (?:diagnosis )?(?:includes?|considerations? include)", r"consider",
    r"equivocal", r"indeterminate", r"borderline", r"potential", r"perhaps", r"rule out", r"r/o",
    r"to exclude", r"not definitely", r"vs\.?",
)
HEDGE_BACKWARD = (
    r"can ?not be (?:entirely |completely |totally )?(?:excluded|ruled out)",
    r"cannot be (?:entirely |completely |totally )?(?:excluded|ruled out)", r"could not be excluded",
    r"(?:is |are )?not (?:entirely |completely )?(?:excluded|ruled out)", r"(?:is|are) (?:possible|suspected|questioned)",
    r"(?:may|might|could) (?:also )?be (?:present|seen|developing|evolving)",
)
HEDGE_BOTH = (r"likely", r"possibly", r"probably", r"versus", r"or less likely")
NEG_FORWARD = (
    r"no", r"not", r"without", r"free of", r"negative for", r"absence of", r"clear of", r"resolution of",
    r"removal of", r"rather than", r"never", r"no evidence of", r"nor",
)
NEG_BACKWARD = (
    r"(?:is |are |was |were )?not (?:clearly |definitely |well )?(?:seen|identified|present|visuali[sz]ed|appreciated|"
    r"evident|demonstrated|detected|apparent|noted)",
    r"(?:is |are )?no longer (?:seen|present|visuali[sz]ed|evident|identified|appreciated|demonstrated)",
    r"(?:is |are )?absent", r"(?:has |have )?(?:been )?excluded", r"(?:is |are )?ruled out",
)
NEG_BOTH = (r"(?:has |have )?(?:since )?resolved", r"(?:has |have )?(?:since )?(?:been )?removed")

_SENTENCE_SPLIT = re.compile(r"(?<=[.!;])\s+|(?<=\?)\s*|\n\s*\n")
_CLAUSE_SPLIT = re.compile(
    r"\b(?:but|however|although|though|whereas|yet|except(?: for)?|aside from|apart from|otherwise|"
    r"which|with the exception of)\b|,?\s+and\s+(?=there\b|the\b)|,\s*(?=(?:the|there|this|these)\b)")
# How far (in words) a backward cue or a qualifier may be from its mention.
_BACKWARD_WORDS = 5
_QUALIFIER_WORDS = 6


def _alternation(phrases: Sequence[str]) -> str:
    # Longest first, so that at any position the longest phrase is the one matched.
    return "|".join(sorted(phrases, key=len, reverse=True))


def _compile(phrases: Sequence[str]) -> re.Pattern:
    return re.compile(r"(?<![\w-])(?:" + _alternation(phrases) + r")(?![\w-])")


@dataclass(frozen=True)
class _Compiled:
    cues: re.Pattern
    mentions: dict[str, re.Pattern]
    exclusions: dict[str, re.Pattern]
    attributes: dict[str, re.Pattern]
    qualifiers: dict[str, dict[str, re.Pattern]]


def _compile_all() -> _Compiled:
    groups = {"pseudo": PSEUDO, "hedge_fwd": HEDGE_FORWARD, "hedge_bwd": HEDGE_BACKWARD, "hedge_both": HEDGE_BOTH,
              "neg_fwd": NEG_FORWARD, "neg_bwd": NEG_BACKWARD, "neg_both": NEG_BOTH}
    # One alternation over all cue kinds, longest phrase first across kinds, so that e.g.
    # "not excluded" (hedge) beats "not" (negation) at the same position.
    tagged = sorted(((p, kind) for kind, ps in groups.items() for p in ps), key=lambda t: len(t[0]), reverse=True)
    named = "|".join(f"(?P<{kind}_{i}>{p})" for i, (p, kind) in enumerate(tagged))
    cues = re.compile(r"(?<![\w-])(?:" + named + r")(?![\w-])|(?P<q_mark>\?)")
    return _Compiled(
        cues=cues,
        mentions={o: _compile(ps) for o, ps in MENTIONS.items()},
        exclusions={o: _compile(ps) for o, ps in EXCLUSIONS.items()},
        attributes={o: _compile(ps) for o, (ps, _) in ATTRIBUTES.items()},
        qualifiers={k: {kind: _compile(ps) for kind, ps in q.items() if ps} for k, q in QUALIFIERS.items()},
    )


_RULES = _compile_all()  # compiled once; immutable


@dataclass(frozen=True)
class Mention:
    observation: str
    text: str  # the matched phrase (with its qualifier for attribute mentions)
    label: int  # POSITIVE, NEGATIVE or UNCERTAIN
    clause: str


@dataclass(frozen=True)
class _Cue:
    kind: str  # "hedge" | "neg"
    direction: str  # "fwd" | "bwd" | "both"
    start: int
    end: int


def normalise(text: str) -> str:
    text = text.lower().replace("___", " ")
    return re.sub(r"\s+", " ", text).strip()


def clauses(text: str) -> list[str]:
    """Sentences split into clauses, in order, for a normalised report."""
    out = []
    for sentence in _SENTENCE_SPLIT.split(normalise(text)):
        for clause in _CLAUSE_SPLIT.split(sentence):
            clause = clause.strip(" ,.;:")
            if clause:
                out.append(clause)
    return out


def _cues(clause: str) -> list[_Cue]:
    found = []
    for m in _RULES.cues.finditer(clause):
        group = m.lastgroup or ""
        if group == "q_mark":
            found.append(_Cue("hedge", "bwd", m.start(), m.end()))
            continue
        kind, direction = group.split("_")[:2]
        if kind != "pseudo":
            found.append(_Cue(kind, direction, m.start(), m.end()))
    return found


def _words_between(clause: str, a: int, b: int) -> int:
    return len(re.findall(r"[\w']+", clause[a:b])) if b > a else 0


def _blank(text: str, pattern: re.Pattern | None) -> str:
    if pattern is None:
        return text
    return pattern.sub(lambda m: " " * len(m.group()), text)


def _nearest_qualifier(clause: str, start: int, end: int, kind: str) -> tuple[str, int, int] | None:
    best = None
    for status, pattern in _RULES.qualifiers[kind].items():
        for m in pattern.finditer(clause):
            if m.start() >= end:
                dist = _words_between(clause, end, m.start())
            elif m.end() <= start:
                dist = _words_between(clause, m.end(), start)
            else:
                continue
            if dist <= _QUALIFIER_WORDS and (best is None or dist < best[0]):
                best = (dist, status, m.start(), m.end())
    return None if best is None else best[1:]


def _status(clause: str, cues: list[_Cue], start: int, end: int, later_start: int,
            other_mentions: list[tuple[int, int]]) -> int:
    """POSITIVE, NEGATIVE or UNCERTAIN for a finding spanning [start, end) in the clause."""
    forward = [c for c in cues if c.direction in ("fwd", "both") and c.end <= later_start]
    nearest_fwd = max(forward, key=lambda c: c.end) if forward else None
    acting = [nearest_fwd] if nearest_fwd else []
    for c in cues:
        if c.start < end or c.direction == "fwd":
            continue
        gap = clause[end:c.start]
        if "," in gap or _words_between(clause, end, c.start) > _BACKWARD_WORDS:
            continue
        if c.direction == "both":
            # A two-way cue acts backward only if it closes the clause: no other finding after it.
            if any(s >= c.end for s, _ in other_mentions) or _words_between(clause, end, c.start) > 2:
                continue
        acting.append(c)
    if any(c.kind == "hedge" for c in acting):
        return UNCERTAIN
    if any(c.kind == "neg" for c in acting):
        return NEGATIVE
    return POSITIVE


def find_mentions(report: str) -> list[Mention]:
    """Every mention the rules find in a report, with its label: for inspection and tests."""
    found: list[Mention] = []
    for clause in clauses(report):
        cues = _cues(clause)
        spans: dict[str, list[tuple[int, int]]] = {}
        for obs, pattern in _RULES.mentions.items():
            text = _blank(clause, _RULES.exclusions.get(obs))
            spans[obs] = [(m.start(), m.end()) for m in pattern.finditer(text)]
        all_spans = [s for v in spans.values() for s in v]
        for obs, obs_spans in spans.items():
            for s, e in obs_spans:
                others = [(a, b) for a, b in all_spans if (a, b) != (s, e)]
                label = _status(clause, cues, s, e, s, others)
                found.append(Mention(obs, clause[s:e], label, clause))
        for obs, pattern in _RULES.attributes.items():
            kind = ATTRIBUTES[obs][1]
            text = _blank(clause, _RULES.exclusions.get(obs))
            taken = spans.get(obs, [])
            for m in pattern.finditer(text):
                s, e = m.start(), m.end()
                if any(a < e and s < b for a, b in taken):
                    continue  # already a direct mention ("enlarged heart")
                q = _nearest_qualifier(clause, s, e, kind)
                if q is None:
                    continue
                status, qs, qe = q
                lo, hi = min(s, qs), max(e, qe)
                phrase = clause[lo:hi]
                if status == "normal":
                    label = NEGATIVE
                elif status == "hedged":
                    label = UNCERTAIN
                else:
                    others = [(a, b) for a, b in all_spans if not (lo <= a and b <= hi)]
                    label = _status(clause, cues, lo, hi, max(s, qs), others)
                found.append(Mention(obs, phrase, label, clause))
    return found


def label_report(report: str) -> np.ndarray:
    """(14,) class codes for one report, in OBSERVATIONS order."""
    best: dict[str, int] = {}
    rank = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
    for m in find_mentions(report):
        if rank[m.label] > rank.get(best.get(m.observation, BLANK), 0):
            best[m.observation] = m.label
    out = np.array([best.get(o, BLANK) for o in OBSERVATIONS], dtype=np.int8)
    findings = [i for i, o in enumerate(OBSERVATIONS) if o not in ("Support Devices", "No Finding")]
    if not np.isin(out[findings], (POSITIVE, UNCERTAIN)).any():
        out[OBSERVATIONS.index("No Finding")] = POSITIVE
    return out


def label_reports(reports: Sequence[str]) -> np.ndarray:
    """(n, 14) class codes."""
    if not reports:
        return np.zeros((0, len(OBSERVATIONS)), dtype=np.int8)
    return np.stack([label_report(r) for r in reports])


class ChexpertRulesMetric(LabelF1Metric):
    name = "chexpert-rules"
    prefix = "rules"
    columns = ("rules_ma5", "rules_ma14", "rules_mi5", "rules_mi14")
    # Named so that they are never read as CheXbert's columns.
    headers = {"rules_ma5": "Ma-5 (rules)", "rules_ma14": "Ma-14 (rules)", "rules_mi5": "Mi-5 (rules)",
               "rules_mi14": "Mi-14 (rules)"}
    description = ("rule-based CheXpert-style labeller (our own phrase lists: mentions, negation and "
                   "hedge cues with clause scope; NOT CheXbert); rrg mapping (positive/uncertain -> 1); "
                   "F1 as sklearn classification_report, default zero_division; top-5 = Cardiomegaly, "
                   "Edema, Consolidation, Atelectasis, Pleural Effusion")

    def label(self, reports: Sequence[str]) -> np.ndarray:
        return label_reports(reports)

    def signature_settings(self) -> dict:
        return {"labeller": "rules", "map": "rrg", "f1": "sklearn-zero0", "top5": "cmp-ede-con-ate-eff"}
