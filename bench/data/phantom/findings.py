"""The finding catalogue and the cohort model: which subject has which finding in which study.

Everything here is about *what* is planted, not how it is drawn (anatomy.py) or described
(reports.py). A cohort is sampled once per split from its own seeded generator, so the
train split does not change when the number of test images does.

Findings follow a two-state Markov chain per subject: the first study draws each finding at
its target prevalence p, later studies keep a present finding with probability `persist`
and acquire an absent one with probability q = p (1 - persist) / (1 - p), which makes p the
stationary prevalence. Co-occurrence is layered on top (edema brings cardiomegaly and
effusions, an endotracheal tube brings a central line), so the observed prevalences sit a
little above the targets; tests check that all of them stay within 5-30%.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class FindingSpec:
    name: str
    prevalence: float  # stationary probability in a study, before co-occurrence
    persist: float  # P(present in the next study | present in this one)
    sided: bool  # has a side (left/right) that is kept across a subject's studies
    device: bool  # devices are never subtle and have no severity in reports
    subtle_rate: float = 0.15  # fraction of positives drawn faintly and reported with a hedge


# Fixed order: the label columns and report checks use it.
SPECS: tuple[FindingSpec, ...] = (
    FindingSpec("cardiomegaly", 0.17, 0.85, sided=False, device=False),
    FindingSpec("pleural_effusion_left", 0.11, 0.6, sided=False, device=False),
    FindingSpec("pleural_effusion_right", 0.12, 0.6, sided=False, device=False),
    FindingSpec("pneumothorax", 0.07, 0.4, sided=True, device=False),
    FindingSpec("consolidation", 0.13, 0.45, sided=True, device=False),
    FindingSpec("edema", 0.11, 0.5, sided=False, device=False),
    FindingSpec("atelectasis", 0.16, 0.5, sided=True, device=False),
    FindingSpec("nodule", 0.07, 0.95, sided=True, device=False),
    FindingSpec("rib_fracture", 0.06, 0.9, sided=True, device=False, subtle_rate=0.25),
    FindingSpec("pacemaker", 0.08, 1.0, sided=False, device=True, subtle_rate=0.0),
    FindingSpec("endotracheal_tube", 0.07, 0.5, sided=False, device=True, subtle_rate=0.0),
    FindingSpec("central_line", 0.11, 0.6, sided=True, device=True, subtle_rate=0.0),
    FindingSpec("sternotomy_wires", 0.08, 1.0, sided=False, device=True, subtle_rate=0.0),
)
FINDINGS: tuple[str, ...] = tuple(s.name for s in SPECS)
SPEC_BY_NAME: dict[str, FindingSpec] = {s.name: s for s in SPECS}

# Findings that make an impression of "no acute cardiopulmonary process" wrong.
ACUTE = frozenset(
    {
        "pleural_effusion_left",
        "pleural_effusion_right",
        "pneumothorax",
        "consolidation",
        "edema",
        "atelectasis",
        "rib_fracture",
    }
)
SEVERITY_WORDS = ("small", "moderate", "large")  # severity 1, 2, 3


@dataclass(frozen=True)
class Finding:
    """A planted finding in one study."""

    name: str
    severity: int = 1  # 1 small/mild, 2 moderate, 3 large/severe
    side: str = ""  # "left"/"right" for sided findings, else ""
    subtle: bool = False  # drawn faintly, reported with a hedge
    # Where it is, in body coordinates (x: -1 image left .. 1 image right, y: -1 top .. 1
    # bottom) or, for rib fractures, (rib index, distance from the midline). Kept across a
    # subject's studies so that a persisting finding stays put.
    loc: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class SubjectPlan:
    subject_id: int
    sex: str  # "M" or "F"
    age: int
    width: float  # body habitus: thorax width and height scale factors
    height: float


@dataclass
class StudyPlan:
    subject: SubjectPlan
    study_id: int
    split: str
    order: int  # 0 for the subject's first study
    when: dt.datetime
    setting: str  # "outpatient", "emergency", "inpatient", "icu"
    view: str  # "PA" or "AP"
    lateral_view: str  # "LATERAL", "LL" or "" when there is no lateral image
    findings: dict[str, Finding] = field(default_factory=dict)
    prior: "StudyPlan | None" = None
    frontal_dicom: str = ""
    lateral_dicom: str = ""

    @property
    def subject_id(self) -> int:
        return self.subject.subject_id

    def has(self, name: str) -> bool:
        return name in self.findings


# Where sided findings sit: zones in body coordinates per side (mirrored for the left).
_ZONES = {
    "upper": (-0.45, 0.0),
    "mid": (-0.05, 0.25),
    "lower": (0.2, 0.45),
}


def _sample_location(name: str, side: str, rng: np.random.Generator) -> tuple[float, float]:
    s = -1.0 if side == "right" else 1.0  # the patient's right is on the image's left
    if name == "rib_fracture":
        return float(rng.integers(3, 8)), float(rng.uniform(0.45, 0.68))
    if name == "nodule":
        zone = _ZONES[str(rng.choice(["upper", "mid", "lower"]))]
        return s * float(rng.uniform(0.32, 0.62)), float(rng.uniform(*zone))
    if name == "consolidation":
        # Lower lobes most often, as in practice; left upper less common.
        zone = _ZONES[str(rng.choice(["upper", "mid", "lower", "lower"]))]
        return s * float(rng.uniform(0.38, 0.55)), float(rng.uniform(*zone))
    if name == "atelectasis":
        return s * float(rng.uniform(0.35, 0.55)), float(rng.uniform(0.2, 0.4))
    return 0.0, 0.0


def _new_finding(spec: FindingSpec, rng: np.random.Generator, side: str = "") -> Finding:
    if spec.sided and not side:
        # Central lines mostly enter on the right; other sided findings either side.
        side = "right" if rng.random() < (0.75 if spec.name == "central_line" else 0.5) else "left"
    subtle = bool(rng.random() < spec.subtle_rate)
    severity = 1 if subtle or spec.device else int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    return Finding(spec.name, severity, side, subtle, _sample_location(spec.name, side, rng))


def _evolve(f: Finding, rng: np.random.Generator) -> Finding:
    """A persisting finding: same side and place, severity drifts by at most one step."""
    spec = SPEC_BY_NAME[f.name]
    if spec.device:
        return f
    subtle = bool(rng.random() < spec.subtle_rate)
    step = int(rng.choice([-1, 0, 1], p=[0.2, 0.6, 0.2]))
    severity = 1 if subtle else int(np.clip(f.severity + step, 1, 3))
    return replace(f, severity=severity, subtle=subtle)


def _next_findings(prev: dict[str, Finding] | None, rng: np.random.Generator) -> dict[str, Finding]:
    out: dict[str, Finding] = {}
    for spec in SPECS:
        # Draw every random number in a fixed order, so one finding's outcome does not
        # shift the stream of the others.
        u = rng.random()
        if prev is not None and spec.name in prev:
            if u < spec.persist:
                out[spec.name] = _evolve(prev[spec.name], rng)
            continue
        p = spec.prevalence
        if prev is not None:
            p = p * (1.0 - spec.persist) / (1.0 - p) if spec.persist < 1.0 else p / 4
        if u < p:
            out[spec.name] = _new_finding(spec, rng)
    def add(name: str) -> None:
        # A finding brought in by another keeps its side and place if the prior study had it.
        prior = prev.get(name) if prev is not None else None
        out[name] = _evolve(prior, rng) if prior is not None else _new_finding(SPEC_BY_NAME[name], rng)

    # Co-occurrence: heart failure (edema) comes with a big heart and effusions; a patient
    # with an endotracheal tube is in intensive care and usually has a central line.
    if "edema" in out:
        for name, prob in (("cardiomegaly", 0.5), ("pleural_effusion_right", 0.35), ("pleural_effusion_left", 0.3)):
            if name not in out and rng.random() < prob:
                add(name)
    if "endotracheal_tube" in out and "central_line" not in out and rng.random() < 0.5:
        add("central_line")
    if "sternotomy_wires" in out and "pacemaker" not in out and rng.random() < 0.15:
        add("pacemaker")
    return {name: out[name] for name in FINDINGS if name in out}


def _setting(findings: dict[str, Finding], rng: np.random.Generator) -> str:
    if "endotracheal_tube" in findings:
        return "icu"
    if "central_line" in findings:
        return "icu" if rng.random() < 0.5 else "inpatient"
    return str(rng.choice(["outpatient", "emergency", "inpatient", "icu"], p=[0.3, 0.35, 0.25, 0.1]))


def sample_split(
    split: str,
    n_frontal: int,
    seed: int,
    first_subject_index: int = 0,
) -> list[StudyPlan]:
    """Studies of one split, grouped by subject, until there are `n_frontal` frontal images.

    Each study has exactly one frontal image, so studies = frontal images. Subject and
    study ids are placeholders here (the index of the subject); `assign_ids` replaces them.
    """
    split_code = {"train": 1, "validate": 2, "test": 3}[split]
    rng = np.random.default_rng([seed, 101, split_code])
    studies: list[StudyPlan] = []
    k = first_subject_index
    while len(studies) < n_frontal:
        n_studies = min(int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15])), n_frontal - len(studies))
        subject = SubjectPlan(
            subject_id=k,
            sex="M" if rng.random() < 0.52 else "F",
            age=int(rng.integers(20, 95)),
            width=float(rng.uniform(0.88, 1.08)),
            height=float(rng.uniform(0.92, 1.06)),
        )
        k += 1
        # MIMIC shifts dates into 2100-2200; studies of a subject are days to years apart.
        when = dt.datetime(int(rng.integers(2110, 2190)), 1, 1) + dt.timedelta(
            days=int(rng.integers(0, 365)), seconds=int(rng.integers(6 * 3600, 23 * 3600))
        )
        prev: StudyPlan | None = None
        for order in range(n_studies):
            findings = _next_findings(prev.findings if prev else None, rng)
            setting = _setting(findings, rng)
            ap = setting == "icu" or (setting == "inpatient" and rng.random() < 0.6) or rng.random() < 0.1
            lateral = "" if ap or rng.random() < 0.15 else ("LATERAL" if rng.random() < 0.9 else "LL")
            if order > 0:
                gap_days = float(rng.choice([rng.uniform(0.3, 3), rng.uniform(3, 60), rng.uniform(60, 900)]))
                when = when + dt.timedelta(days=gap_days)
            study = StudyPlan(
                subject=subject,
                study_id=len(studies),
                split=split,
                order=order,
                when=when.replace(microsecond=int(rng.integers(0, 1000)) * 1000),
                setting=setting,
                view="AP" if ap else "PA",
                lateral_view=lateral,
                findings=findings,
                prior=prev,
            )
            studies.append(study)
            prev = study
    return studies


def dicom_id(seed: int, study_id: int, image: int) -> str:
    """A MIMIC-style dicom id: five dash-separated groups of 8 hex digits (44 characters)."""
    rng = np.random.default_rng([seed, 202, study_id, image])
    digits = "".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5, dtype=np.uint64))
    return "-".join(digits[i : i + 8] for i in range(0, 40, 8))


def assign_ids(studies: list[StudyPlan], seed: int) -> None:
    """Give subjects and studies unique 8-digit MIMIC-like ids, and images dicom ids.

    Subjects get ids in 10,000,000-19,999,999 (MIMIC's range, hence folders p10..p19) and
    studies 50,000,000-59,999,999, drawn without replacement from one seeded generator.
    """
    rng = np.random.default_rng([seed, 303])
    subjects: dict[int, SubjectPlan] = {}
    for st in studies:
        subjects.setdefault(id(st.subject), st.subject)
    subject_ids = rng.choice(10_000_000, size=len(subjects), replace=False) + 10_000_000
    study_ids = rng.choice(10_000_000, size=len(studies), replace=False) + 50_000_000
    new_subject = {
        key: replace(s, subject_id=int(sid)) for (key, s), sid in zip(subjects.items(), subject_ids)
    }
    for st, sid in zip(studies, study_ids):
        st.subject = new_subject[id(st.subject)]
        st.study_id = int(sid)
        st.frontal_dicom = dicom_id(seed, st.study_id, 0)
        st.lateral_dicom = dicom_id(seed, st.study_id, 1) if st.lateral_view else ""
