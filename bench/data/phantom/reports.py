"""Radiology report text for phantom studies, written from the planted findings.

Reports follow the layout of MIMIC-CXR free text: a banner line, upper-case headings at the
starts of lines (indented by one space as in MIMIC), text wrapped at about 78 characters,
de-identified spans written as "___". Wording is sampled from a phrase catalogue with
several phrasings per finding, severity words, laterality, hedges for subtle findings,
comparison language when the previous study of the subject had the finding, and normal
statements for some absent findings.

The catalogue is written so that a simple checker can read it back (`mentions`): every
mention of a finding names it with one of the patterns in `MENTION_PATTERNS`, negated
mentions carry a negation cue before the mention or a resolution phrase in the same
clause, and a sentence never mixes a negated finding before a positive one. Tests use the
checker to confirm that reports mention exactly the planted findings; it doubles as a tiny
rule-based labeller for the phantom.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

import numpy as np

from bench.data.phantom.findings import ACUTE, FINDINGS, Finding, StudyPlan

# ------------------------------------------------------------------------------------
# Reading reports back


# How each finding is named in text. Effusions are named with their side right before
# "effusion" ("small left pleural effusion", "bilateral pleural effusions"); an effusion
# mentioned without a side is not attributed to either side.
MENTION_PATTERNS: dict[str, str] = {
    "cardiomegaly": r"cardiomegaly|(?:heart|cardiac silhouette)\b[^.;]{0,40}?\benlarge(?:d|ment)\b|enlarge(?:d|ment of the) (?:heart|cardiac silhouette)",
    "pleural_effusion_left": r"\b(?:left|bilateral)(?:-sided)?\s+(?:pleural\s+)?effusions?\b|\bleft costophrenic angle",
    "pleural_effusion_right": r"\b(?:right|bilateral)(?:-sided)?\s+(?:pleural\s+)?effusions?\b|\bright costophrenic angle",
    "pneumothorax": r"pneumothora(?:x|ces)",
    "consolidation": r"consolidat\w*|pneumonia|airspace (?:disease|opacit(?:y|ies))",
    "edema": r"\bedema\b|vascular congestion",
    "atelectasis": r"atelecta\w*",
    "nodule": r"\bnodules?\b|nodular opacit\w*",
    "rib_fracture": r"\bfractur\w*",
    "pacemaker": r"pacemaker|\bpacer\b|\bICD\b|pacing leads?",
    "endotracheal_tube": r"endotracheal tube|\bET tube\b|\bETT\b",
    "central_line": r"central (?:venous )?(?:line|catheter)|\bPICC\b|\bCVC\b",
    "sternotomy_wires": r"sternotomy",
}
_MENTION = {k: re.compile(v, re.IGNORECASE) for k, v in MENTION_PATTERNS.items()}
# A negation cue before the mention, within its clause.
_NEG_BEFORE = re.compile(
    r"\b(?:no|not|without|negative for|free of|resolution of|removal of|absence of|no longer)\b", re.IGNORECASE
)
# A resolution phrase anywhere in the clause ("... has resolved", "... has been removed").
_NEG_CLAUSE = re.compile(
    r"\b(?:has|have) (?:since )?(?:resolved|been removed)\b|\bno longer (?:seen|visualized|present)\b", re.IGNORECASE
)
_HEDGE = re.compile(r"\b(?:possible|possibly|cannot (?:be )?exclude\w*|may represent|could reflect|questionable|suspected|likely)\b", re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r"[.;]|\bbut\b|\bhowever\b|\balthough\b", re.IGNORECASE)


def mentions(text: str) -> dict[str, str]:
    """Finding name -> "positive", "uncertain" or "negative" for the findings `text` mentions.

    Clause by clause: a mention preceded by a negation cue in its clause, or in a clause
    with a resolution phrase, is negative; one in a clause with a hedge is uncertain;
    otherwise positive. Across clauses, positive beats uncertain beats negative.
    """
    rank = {"negative": 0, "uncertain": 1, "positive": 2}
    out: dict[str, str] = {}
    flat = re.sub(r"\s+", " ", text)
    for clause in _CLAUSE_SPLIT.split(flat):
        resolved = bool(_NEG_CLAUSE.search(clause))
        hedged = bool(_HEDGE.search(clause))
        for name, pat in _MENTION.items():
            for m in pat.finditer(clause):
                if resolved or _NEG_BEFORE.search(clause[: m.end()]):
                    label = "negative"
                elif hedged:
                    label = "uncertain"
                else:
                    label = "positive"
                if name not in out or rank[label] > rank[out[name]]:
                    out[name] = label
    return {k: out[k] for k in FINDINGS if k in out}


# ------------------------------------------------------------------------------------
# Writing reports

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_SEV_EFFUSION = ("small", "moderate", "large")
_SEV_MILD = ("mild", "moderate", "severe")
_SEV_ADV = ("mildly", "moderately", "markedly")


def _zone(y: float) -> str:
    return "upper" if y < -0.1 else ("mid" if y < 0.2 else "lower")


def _lobe(f: Finding) -> str:
    zone = _zone(f.loc[1])
    if f.side == "right":
        return {"upper": "right upper lobe", "mid": "right middle lobe", "lower": "right lower lobe"}[zone]
    return {"upper": "left upper lobe", "mid": "lingula", "lower": "left lower lobe"}[zone]


@dataclass(frozen=True)
class _Phrase:
    """Ways to name a planted finding: noun phrases, by how sure the reader is."""

    nps: tuple[str, ...]  # noun phrases, no article, lower case
    article: bool = True  # "a small left pleural effusion" vs "cardiomegaly"
    plural: bool = False  # "sternotomy wires are", "bilateral pleural effusions are"


def _noun_phrases(f: Finding, both_effusions: tuple[Finding, Finding] | None, rng: np.random.Generator) -> _Phrase:
    sev = f.severity - 1
    side = f.side
    if f.name == "cardiomegaly":
        return _Phrase(
            (
                f"{_SEV_MILD[sev]} cardiomegaly",
                f"{_SEV_MILD[sev]} enlargement of the cardiac silhouette",
                f"{_SEV_ADV[sev]} enlarged cardiac silhouette",
            ),
            article=False,
        )
    if f.name.startswith("pleural_effusion"):
        if both_effusions is not None:
            sizes = {g.severity for g in both_effusions}
            word = _SEV_EFFUSION[min(sizes) - 1] if len(sizes) == 1 else "small to moderate"
            return _Phrase((f"{word} bilateral pleural effusions", f"bilateral pleural effusions, {word}"), article=False, plural=True)
        side = "left" if f.name.endswith("left") else "right"
        w = _SEV_EFFUSION[sev]
        nps = [f"{w} {side} pleural effusion", f"{w} {side}-sided pleural effusion", f"{w} {side} effusion"]
        if f.severity == 1:
            nps.append(f"trace {side} pleural effusion")
        return _Phrase(tuple(nps))
    if f.name == "pneumothorax":
        w = _SEV_EFFUSION[sev]
        nps = [f"{w} {side} pneumothorax", f"{w} {side}-sided pneumothorax"]
        if f.severity == 1:
            nps.append(f"small {side} apical pneumothorax")
        return _Phrase(tuple(nps))
    if f.name == "consolidation":
        lobe = _lobe(f)
        kind = ("patchy", "focal", "extensive")[sev]
        return _Phrase(
            (
                f"{kind} {'lingular' if lobe == 'lingula' else lobe} consolidation",
                f"{kind} consolidation in the {lobe}",
                f"{kind} airspace opacity in the {lobe} concerning for pneumonia",
                f"{'lingular' if lobe == 'lingula' else lobe} pneumonia",
            ),
            article=False,
        )
    if f.name == "edema":
        w = _SEV_MILD[sev]
        nps = [f"{w} pulmonary edema", f"{w} interstitial pulmonary edema"]
        if f.severity == 1:
            nps.append("mild pulmonary vascular congestion")
        if f.severity == 3:
            nps.append("severe pulmonary edema with perihilar haziness")
        return _Phrase(tuple(nps), article=False)
    if f.name == "atelectasis":
        w = ("minimal", "mild", "moderate")[sev]
        return _Phrase(
            (f"{w} {side} basilar atelectasis", f"plate-like atelectasis at the {side} base", f"{w} atelectasis at the {side} lung base"),
            article=False,
        )
    if f.name == "nodule":
        mm = int(round((0.028, 0.036, 0.046)[sev] * 2 * 150 + rng.integers(-1, 2)))  # ~300 mm of chest across
        zone = _zone(f.loc[1])
        return _Phrase((f"{mm} mm nodule in the {side} {zone} lung", f"{side} {zone} lung nodule measuring {mm} mm", f"{mm}-mm {side} {zone} lung nodule"))
    if f.name == "rib_fracture":
        rib = _ORDINALS[int(f.loc[0]) + 1]
        kind = "nondisplaced" if f.subtle else "mildly displaced"
        return _Phrase((f"{kind} fracture of the {side} {rib} rib", f"{kind} {side} {rib} rib fracture", f"{side} {rib} posterolateral rib fracture"))
    if f.name == "pacemaker":
        return _Phrase(
            (
                "left-sided pacemaker with leads in the right atrium and right ventricle",
                "left chest wall dual-chamber pacemaker",
                "left-sided pacer device with leads terminating in the right atrium and right ventricle",
            )
        )
    if f.name == "endotracheal_tube":
        cm = int(rng.integers(3, 6))
        return _Phrase(
            (
                f"endotracheal tube terminating approximately {cm} cm above the carina",
                f"endotracheal tube with tip {cm} cm above the carina",
                "endotracheal tube in standard position",
            ),
            article=True,
        )
    if f.name == "central_line":
        if side == "right":
            return _Phrase(
                (
                    "right internal jugular central venous catheter terminating in the mid SVC",
                    "right IJ central line with tip in the lower SVC",
                    "right internal jugular central venous line ending at the cavoatrial junction",
                )
            )
        return _Phrase(
            (
                "left subclavian central venous catheter terminating in the SVC",
                "left-sided PICC with tip in the low SVC",
                "left subclavian central line ending in the mid SVC",
            )
        )
    if f.name == "sternotomy_wires":
        return _Phrase(("median sternotomy wires", "intact median sternotomy wires", "sternotomy wires and mediastinal clips"), article=False, plural=True)
    raise ValueError(f"no phrases for finding {f.name!r}")


def _a(np_: str) -> str:
    return ("an " if np_[0] in "aeiou" else "a ") + np_


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _positive_sentence(f: Finding, prev: Finding | None, phrase: _Phrase, rng: np.random.Generator, has_prior: bool) -> str:
    np_ = _choice(rng, phrase.nps)
    art = _a(np_) if phrase.article else np_
    be = "are" if phrase.plural else "is"
    if f.subtle:
        templates = [
            f"Possible {np_}.",
            f"{_cap(art)} cannot be excluded.",
            f"Cannot exclude {art}.",
            f"Subtle opacity may represent {art}.",
            f"Questionable {np_}.",
        ]
        if f.name in {"cardiomegaly", "edema"}:
            templates = [f"Possible {np_}.", f"Findings could reflect {np_}.", f"Questionable {np_}."]
        return _choice(rng, templates)
    if prev is not None:
        if f.severity > prev.severity:
            templates = [f"Interval increase in {np_}.", f"{_cap(np_)}, increased compared to the prior study.", f"{_cap(np_)}, worse than before."]
        elif f.severity < prev.severity:
            templates = [f"Interval decrease in {np_}.", f"{_cap(np_)}, decreased from the prior exam.", f"{_cap(np_)}, improved since the prior study."]
        else:
            templates = [f"{_cap(np_)}, unchanged from prior.", f"Again seen {be} {art}.", f"Stable {np_}.", f"{_cap(np_)} {be} unchanged."]
        return _choice(rng, templates)
    templates = [f"There {be} {art}.", f"{_cap(np_)} {be} present.", f"{_cap(np_)} {be} noted.", f"{_cap(np_)}."]
    if has_prior:
        templates += [f"New {np_}.", f"Interval development of {art}."]
    return _choice(rng, templates)


_RESOLVED_NAME = {
    "cardiomegaly": "the cardiomegaly",
    "pleural_effusion_left": "the left pleural effusion",
    "pleural_effusion_right": "the right pleural effusion",
    "pneumothorax": "the pneumothorax",
    "consolidation": "the consolidation",
    "edema": "the pulmonary edema",
    "atelectasis": "the atelectasis",
    "nodule": "the nodule",
    "rib_fracture": "the rib fracture",
    "pacemaker": "the pacemaker",
    "endotracheal_tube": "the endotracheal tube",
    "central_line": "the central venous catheter",
    "sternotomy_wires": "the sternotomy wires",
}


def _resolved_sentence(name: str, rng: np.random.Generator) -> str | None:
    """A statement that a finding of the prior study is gone (never for chronic ones)."""
    if name in {"cardiomegaly", "nodule", "rib_fracture", "pacemaker", "sternotomy_wires"}:
        return None
    what = _RESOLVED_NAME[name]
    if name in {"endotracheal_tube", "central_line"}:
        return _choice(rng, [f"Interval removal of {what}.", f"{_cap(what)} has been removed."])
    return _choice(rng, [f"Interval resolution of {what}.", f"Previously seen {what[4:]} has resolved.", f"{_cap(what)} has resolved."])


def _normal_sentences(study: StudyPlan, rng: np.random.Generator) -> list[str]:
    """Statements about absent findings, sampled the way radiologists vary them."""
    has = study.has
    out: list[str] = []
    if not has("cardiomegaly") and rng.random() < 0.85:
        out.append(
            _choice(
                rng,
                [
                    "The cardiomediastinal silhouette is within normal limits.",
                    "Heart size is normal.",
                    "Cardiac and mediastinal contours are normal.",
                    "Normal cardiomediastinal silhouette.",
                    "The heart is normal in size.",
                ],
            )
        )
    parenchymal = ("consolidation", "edema", "atelectasis", "nodule", "pneumothorax", "pleural_effusion_left", "pleural_effusion_right")
    if not any(has(n) for n in parenchymal) and rng.random() < 0.6:
        out.append(_choice(rng, ["The lungs are clear.", "Lungs are well expanded and clear.", "The lungs are clear bilaterally."]))
    negs = []
    if not has("consolidation"):
        negs.append(_choice(rng, ["focal consolidation", "consolidation", "focal consolidation"]))
    if not has("pleural_effusion_left") and not has("pleural_effusion_right"):
        negs.append("pleural effusion")
    if not has("pneumothorax"):
        negs.append("pneumothorax")
    if negs and rng.random() < 0.9:
        k = len(negs) if rng.random() < 0.7 else int(rng.integers(1, len(negs) + 1))
        picked = negs[:k]
        joined = picked[0] if len(picked) == 1 else ", ".join(picked[:-1]) + (", or " if len(picked) > 2 else " or ") + picked[-1]
        out.append(_choice(rng, [f"There is no {joined}.", f"No {joined}.", f"No {joined} is seen.", f"There is no evidence of {joined}."]))
    if not has("edema") and rng.random() < 0.4:
        out.append(_choice(rng, ["No pulmonary edema.", "There is no pulmonary edema.", "No evidence of pulmonary edema."]))
    if not has("nodule") and rng.random() < 0.08:
        out.append("No suspicious pulmonary nodules are identified.")
    if not has("rib_fracture") and rng.random() < 0.35:
        out.append(_choice(rng, ["No acute osseous abnormality.", "No displaced rib fractures are identified.", "The osseous structures are unremarkable."]))
    return out


_COMPLAINTS = {
    "general": [
        "shortness of breath", "chest pain", "cough", "fever", "hypoxia", "dyspnea", "weakness",
        "cough and fever", "pleuritic chest pain", "tachycardia", "altered mental status",
    ],
    "cardiomegaly": ["leg swelling", "dyspnea on exertion", "CHF"],
    "edema": ["CHF exacerbation", "volume overload", "worsening dyspnea"],
    "consolidation": ["productive cough and fever", "leukocytosis", "fevers and chills"],
    "pneumothorax": ["sudden onset chest pain", "status post chest tube removal"],
    "rib_fracture": ["fall", "chest wall pain after fall", "trauma"],
    "endotracheal_tube": ["intubated", "status post intubation"],
    "central_line": ["line placement", "new central line"],
    "pacemaker": ["status post pacemaker placement"],
}
_QUESTIONS = {
    "general": ["evaluate for pneumonia", "eval for acute process", "r/o pneumonia", "assess for acute cardiopulmonary process", "eval for infiltrate"],
    "edema": ["evaluate for pulmonary edema", "assess for fluid overload"],
    "pneumothorax": ["evaluate for pneumothorax", "r/o ptx"],
    "endotracheal_tube": ["evaluate ETT placement", "assess tube position"],
    "central_line": ["confirm line placement", "evaluate central line position"],
    "rib_fracture": ["eval for fracture", "evaluate for rib fracture"],
    "pacemaker": ["assess lead position", "eval for pneumothorax"],
}


def indication(study: StudyPlan, rng: np.random.Generator) -> str:
    """An indication in MIMIC's register; age and often sex de-identified as "___"."""
    present = list(study.findings)
    related = [n for n in present if n in _COMPLAINTS]
    topic = _choice(rng, related) if related and rng.random() < 0.6 else "general"
    complaint = _choice(rng, _COMPLAINTS[topic])
    question = _choice(rng, _QUESTIONS.get(topic, _QUESTIONS["general"]))
    man = study.subject.sex == "M"
    who = _choice(
        rng,
        [
            f"___-year-old {'man' if man else 'woman'} with {complaint}",
            f"___ year old {'male' if man else 'female'} with {complaint}",
            f"___{'M' if man else 'F'} with {complaint}",
            f"History: ___{'M' if man else 'F'} with {complaint}",
        ],
    )
    return _choice(rng, [f"{who}, {question}", f"{who}  // {question}", f"{who}.  {_cap(question)}."])


def _exam_name(study: StudyPlan) -> str:
    if study.view == "AP":
        return "CHEST (PORTABLE AP)"
    return "CHEST (PA AND LAT)" if study.lateral_view else "CHEST (SINGLE VIEW)"


def examination(study: StudyPlan) -> str:
    """PerformedProcedureStepDescription of the study, as in the metadata table."""
    return _exam_name(study)


def _technique(study: StudyPlan) -> str:
    if study.view == "AP":
        return "Portable AP chest radiograph."
    return "Chest PA and lateral" if study.lateral_view else "Single frontal view of the chest"


def _wrap(text: str) -> str:
    return "\n".join(" " + line for line in textwrap.wrap(text, width=76))


def findings_and_impression(study: StudyPlan, rng: np.random.Generator) -> tuple[str, str]:
    """(findings text, impression text) for a study."""
    prior = study.prior
    prev = prior.findings if prior is not None else {}
    both = None
    if study.has("pleural_effusion_left") and study.has("pleural_effusion_right") and rng.random() < 0.6:
        pair = (study.findings["pleural_effusion_left"], study.findings["pleural_effusion_right"])
        # Named together only when both are clear: a hedge must stay with its own side.
        both = pair if not any(f.subtle for f in pair) else None
    positives: list[tuple[str, str]] = []  # (name, sentence)
    short: list[tuple[str, str]] = []  # (name, impression phrase)
    for name, f in study.findings.items():
        if both is not None and name == "pleural_effusion_right":
            continue  # named together with the left one
        phrase = _noun_phrases(f, both, rng)
        p = prev.get(name)
        if both is not None and name.startswith("pleural_effusion"):
            p = None  # comparison wording for a pair would need both priors; keep it plain
        positives.append((name, _positive_sentence(f, p, phrase, rng, prior is not None)))
        np_ = phrase.nps[0]
        short.append((name, ("possible " + np_) if f.subtle else np_))
    # Devices first, then the heart, then the lungs and pleura, as radiologists often do.
    order = {n: i for i, n in enumerate(("endotracheal_tube", "central_line", "pacemaker", "sternotomy_wires"))}
    positives.sort(key=lambda t: order.get(t[0], 10))
    resolved = [s for n in prev if n not in study.findings for s in [_resolved_sentence(n, rng)] if s]
    sentences = [s for _, s in positives] + resolved + _normal_sentences(study, rng)
    findings_text = " ".join(sentences)

    acute = [n for n in study.findings if n in ACUTE]
    if not acute:
        lead = _choice(rng, ["No acute cardiopulmonary process.", "No acute intrathoracic abnormality.", "No evidence of acute disease."])
        rest = [_cap(s) + "." for n, s in short if n not in ACUTE and rng.random() < 0.5]
        impression = " ".join([lead] + rest)
    else:
        items = [s for _, s in short]
        if len(items) > 3 and rng.random() < 0.5:
            impression = "\n".join(f"{i + 1}. {_cap(s)}." for i, s in enumerate(items))
        else:
            impression = " ".join(_cap(s) + "." for s in items)
        if any(n in prev for n in acute) and rng.random() < 0.5:
            impression += " " + _choice(rng, ["Overall, little interval change.", "Findings as above, compared to prior."])
    return findings_text, impression


def write_report(study: StudyPlan, rng: np.random.Generator) -> str:
    """The full free-text report of a study."""
    findings_text, impression_text = findings_and_impression(study, rng)
    lines: list[str] = []
    layout = rng.random()
    if rng.random() < 0.08:
        hour = int(rng.integers(1, 13))
        lines += [
            f"WET READ: ___ ___ ___ {hour}:{int(rng.integers(0, 60)):02d} {'AM' if rng.random() < 0.5 else 'PM'}",
            textwrap.indent(textwrap.fill(impression_text.replace("\n", " "), 74), "  "),
            " " + "_" * 78,
        ]
    if rng.random() < 0.93:
        lines.append(" " * 33 + "FINAL REPORT")
    lines.append(f" EXAMINATION:  {_exam_name(study)}")
    lines.append(" ")
    lines.append(f" INDICATION:  {indication(study, rng)}")
    lines.append(" ")
    if rng.random() < 0.6:
        lines += [f" TECHNIQUE:  {_technique(study)}", " "]
    if study.prior is None:
        comparison = _choice(rng, ["None.", "None available.", "None."])
    else:
        comparison = _choice(rng, ["___", "Chest radiograph from ___.", "Prior chest radiographs ___.", "___ chest radiograph."])
    lines += [f" COMPARISON:  {comparison}", " "]
    impression_body = "\n".join(_wrap(p) for p in impression_text.split("\n"))
    if layout < 0.07:  # impression only, as in some MIMIC reports
        lines += [" IMPRESSION: ", " ", _wrap(findings_text)]
    elif layout < 0.10:
        lines += [" FINDINGS AND IMPRESSION: ", " ", _wrap(findings_text)]
    else:
        lines += [" FINDINGS: ", " ", _wrap(findings_text), " ", " IMPRESSION: ", " ", impression_body]
    return "\n".join(lines) + "\n"
