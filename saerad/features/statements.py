"""Finding statements in report text: splitting, normalising, and reading their meaning.

Used by the LLM-free labeller (candidate statements and their keys) and the LLM-free
composer (duplicates and contradictions). Everything here is rule-based and deliberately
small: it knows the common phrasings of chest X-ray findings, not medicine.

- `split_statements(text)`: sentences, then clauses at ";" and at "but"/"however"; for a
  clause "X with Y" that does not negate, X alone is a statement too ("A pacemaker with
  leads in ..." -> also "A pacemaker").
- `statement_key(s)`: a normal form for counting and matching: lower case, words only,
  lead-ins such as "there is a" and trailing status phrases such as "is unchanged" removed.
- `topics(s)`: the findings a statement speaks about, each with a side and a polarity
  (present or absent), for contradiction checks ("no effusion" vs "left effusion").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.sentences import split_sentences  # the harness's one sentence splitter; re-exported here

_CLAUSE = re.compile(r";|\s+but\s+|,?\s+however,?\s+", re.IGNORECASE)
_WITH = re.compile(r",?\s+with\s+", re.IGNORECASE)
NEGATION = re.compile(r"\b(?:no|not|without|negative for|free of|absence of|resolved|removed|"
                      r"no longer|clear|normal|unremarkable|within normal limits)\b", re.IGNORECASE)
_LEAD_IN = re.compile(
    r"^(?:(?:there (?:is|are|has been|have been|remains?)|again (?:seen|noted) (?:is|are)|"
    r"(?:re)?demonstrated (?:is|are)|unchanged|redemonstrat\w+ (?:of )?|interval (?:development|increase|"
    r"decrease|placement|improvement) (?:of|in))\s+)+", re.IGNORECASE)
# Hedges: kept in the surface text (they carry meaning) but not in the key, so that
# "questionable X" and "X" are counted as the same finding.
_HEDGE_LEAD = re.compile(r"^(?:(?:findings|this|which) (?:could|may|might) (?:reflect|represent)|cannot (?:be )?"
                         r"exclude\w*|questionable|possible|possibly|suspected|likely)\s+", re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
_TRAIL = re.compile(
    r"(?:,\s*(?:unchanged|stable|again seen|new|not significantly changed)"
    r"|\s+(?:is|are) (?:again )?(?:seen|noted|present|unchanged|stable|new|demonstrated|identified|visualized)"
    r"|\s+(?:is|are|remains?) (?:essentially )?(?:unchanged|stable)"
    r"|\s+persists?"
    r"|\s+(?:has|have) (?:increased|decreased|improved|worsened)"
    r"|\s+(?:is|are) (?:again )?(?:re)?demonstrated)"
    r"(?:\s+(?:since|from|compared to|in the interval)\b.*)?$", re.IGNORECASE)
_NON_WORD = re.compile(r"[^a-z0-9\- ]+")


def split_statements(text: str) -> list[str]:
    """Finding statements of a report, as surface text without the final full stop."""
    out: list[str] = []
    for sentence in split_sentences(text):
        for clause in _CLAUSE.split(sentence):
            clause = clause.strip().rstrip(".!?").strip(" ,")
            if not clause:
                continue
            out.append(clause)
            if not NEGATION.search(clause):
                # "X with Y": X is the finding and Y its detail ("central line with tip in the
                # SVC"), so X alone is a statement too. Only the head is kept: tails such as
                # "tip in the SVC" or "right ventricle" are not findings on their own, and
                # negated clauses are left whole ("no X with Y" would lose its "no").
                head = _WITH.split(clause, maxsplit=1)[0].strip(" ,")
                if head != clause and len(head.split()) >= 2:
                    out.append(head)
    return out


def clean_surface(statement: str) -> str:
    """A statement as it should read on its own: lead-in, article and status trimmed."""
    s = statement.strip().rstrip(".").strip()
    s = _LEAD_IN.sub("", s)
    s = _ARTICLE.sub("", s)
    trimmed = _TRAIL.sub("", s)
    if len(trimmed.split()) >= 2:  # "Heart is stable" must not become "Heart"
        s = trimmed
    return s.strip(" ,")


def statement_key(statement: str) -> str:
    """Normal form for counting and matching statements."""
    s = clean_surface(statement)
    s = clean_surface(_HEDGE_LEAD.sub("", s)).lower()
    s = s.replace("-sided", "").replace("-", " ")
    s = _NON_WORD.sub(" ", s)
    return " ".join(s.split())


def as_sentence(statement: str) -> str:
    """Capitalised and ending in a full stop."""
    s = statement.strip().rstrip(".").strip()
    if not s:
        return ""
    return s[0].upper() + s[1:] + "."


# -- meaning: which findings, which side, present or absent ----------------------------

# Finding -> pattern naming it. Broad on purpose: a contradiction check must see that
# "the lungs are clear" speaks about consolidation, and "heart size is normal" about
# cardiomegaly.
TOPIC_PATTERNS: dict[str, str] = {
    "pleural_effusion": r"effusions?|costophrenic angles? (?:is|are) (?:sharp|blunted)|blunting of the \w+ costophrenic",
    "pneumothorax": r"pneumothora(?:x|ces)",
    "consolidation": r"consolidat\w*|pneumonia|airspace (?:disease|opacit\w*)|infiltrate|focal opacit\w*",
    "edema": r"\bedema\b|vascular congestion|congestion",
    "atelectasis": r"atelecta\w*",
    "cardiomegaly": r"cardiomegaly|heart size|size of the heart|cardiac silhouette|\bheart\b|cardiac size|cardiomediastinal",
    "nodule": r"\bnodul\w*|\bmass\b",
    "fracture": r"fractur\w*|osseous abnormalit\w*",
    "pacemaker": r"pacemaker|\bpacer\b|\bICD\b|pacing",
    "tube": r"endotracheal tube|\bET tube\b|\bETT\b|enteric tube|NG tube|nasogastric",
    "line": r"central (?:venous )?(?:line|catheter)|\bPICC\b|\bIJ\b|\bCVC\b",
    "sternotomy": r"sternotomy",
}
_TOPIC = {k: re.compile(v, re.IGNORECASE) for k, v in TOPIC_PATTERNS.items()}
# Normal statements that negate findings without naming them.
_LUNGS_CLEAR = re.compile(r"\blungs? (?:are|is|appear|remain)?\s*(?:\w+ )?(?:clear|well expanded and clear)\b|"
                          r"no (?:acute )?cardiopulmonary (?:process|abnormality)", re.IGNORECASE)
_NORMAL_HEART = re.compile(r"(?:heart|cardiac)[^.;]{0,30}\b(?:normal|within normal limits|top normal)\b|"
                           r"normal (?:heart|cardiac) size|cardiac and mediastinal contours are normal", re.IGNORECASE)
_SIDE = re.compile(r"\b(left|right|bilateral|bibasilar|both)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Topic:
    finding: str
    side: str  # "left", "right", "both" or "" (unspecified: overlaps any side)
    present: bool

    def conflicts(self, other: "Topic") -> bool:
        if self.finding != other.finding or self.present == other.present:
            return False
        return not self.side or not other.side or self.side == "both" or other.side == "both" \
            or self.side == other.side


def _side_of(text: str) -> str:
    sides = {m.group(1).lower() for m in _SIDE.finditer(text)}
    sides = {"both" if s in ("bilateral", "bibasilar", "both") else s for s in sides}
    if "both" in sides or {"left", "right"} <= sides:
        return "both"
    return next(iter(sides), "")


def topics(statement: str) -> set[Topic]:
    """The findings a statement is about, with side and polarity."""
    out: set[Topic] = set()
    s = statement.strip()
    if _LUNGS_CLEAR.search(s):
        for f in ("consolidation", "edema", "atelectasis", "pleural_effusion", "pneumothorax", "nodule"):
            out.add(Topic(f, "", False))
    if _NORMAL_HEART.search(s):
        out.add(Topic("cardiomegaly", "", False))
    for clause in _CLAUSE.split(s):
        for name, pat in _TOPIC.items():
            for m in pat.finditer(clause):
                before = clause[: m.start()]
                negated = bool(re.search(r"\b(?:no|not|without|negative for|free of|absence of|no longer|normal)\b",
                                         before, re.IGNORECASE)) or \
                    bool(re.search(r"\b(?:resolved|been removed|normal|unremarkable|sharp|clear)\b",
                                   clause[m.end():], re.IGNORECASE))
                if name == "cardiomegaly" and not negated and not re.search(
                        r"enlarge|cardiomegaly|increased|prominen|widen", clause, re.IGNORECASE):
                    continue  # "the heart" alone says nothing about its size
                side = _side_of(clause)
                out.add(Topic(name, side, not negated))
    return out


def is_normal(statement: str) -> bool:
    """True for a statement that only says findings are absent or normal."""
    t = topics(statement)
    return bool(t) and not any(x.present for x in t)
