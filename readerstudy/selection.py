"""Which studies readers see, in which order, and under which letters.

Studies: one report per study (its first sample in id order, so that the images of a study
never count twice), chosen among the studies every run has a prediction for, with a seeded
generator; optionally half normal and half abnormal by the reference (a reference the
harness's rule-based labeller finds no finding in is normal).

Blinding: per study, the systems are shuffled and lettered A, B, C... anew, so a letter
says nothing about a system across studies. Per reader, the order of the studies is
shuffled too (order effects fall on all systems alike). With `reads_per_study` below the
number of readers, studies are dealt to readers in turn so that each study is read that
many times; by default every reader reads every study.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from bench.data.records import Sample
from bench.errors import BenchError


@dataclass(frozen=True)
class Selection:
    samples: list[Sample]  # in selection order
    letters: dict[str, dict[str, str]]  # sample id -> letter -> run label
    readings: dict[str, list[str]]  # reader -> sample ids, in that reader's order


def common_samples(samples: list[Sample], run_ids: list[set[str]], run_labels: list[str]) -> list[Sample]:
    """The first sample (by id) of each study that every run has a prediction for."""
    common = set.intersection(*run_ids) if run_ids else set()
    by_study: dict[str, Sample] = {}
    for s in sorted(samples, key=lambda s: s.id):
        if s.id in common and s.study_id not in by_study:
            by_study[s.study_id] = s
    if not by_study:
        raise BenchError("the runs have no study in common (" + ", ".join(
            f"{label}: {len(ids)} predictions" for label, ids in zip(run_labels, run_ids))
            + "); export from runs generated on the same split")
    return [by_study[k] for k in sorted(by_study)]


def is_normal(reference: str) -> bool:
    """No finding by the rule-based labeller: its "No Finding" class is positive."""
    from bench.metrics.chexpert_rules import label_report
    from bench.metrics.f1 import OBSERVATIONS, POSITIVE

    return bool(label_report(reference)[OBSERVATIONS.index("No Finding")] == POSITIVE)


def select(candidates: list[Sample], run_labels: list[str], n: int, readers: list[str], seed: int,
           stratify: bool = False, reads_per_study: int | None = None) -> Selection:
    if n < 1:
        raise BenchError(f"--n must be at least 1, got {n}")
    if not readers:
        raise BenchError("a reader study needs at least one reader (--readers)")
    if n > len(candidates):
        raise BenchError(f"--n {n} asks for more studies than the runs have in common ({len(candidates)})")
    reads = len(readers) if reads_per_study is None else reads_per_study
    if not 1 <= reads <= len(readers):
        raise BenchError(f"--reads-per-study must be between 1 and the number of readers ({len(readers)}), got {reads}")
    if len(run_labels) > len(string.ascii_uppercase):
        raise BenchError(f"at most {len(string.ascii_uppercase)} runs fit the letters A-Z; got {len(run_labels)}")
    rng = np.random.default_rng(seed)
    if stratify:
        normal = [s for s in candidates if is_normal(s.findings)]
        abnormal = [s for s in candidates if not is_normal(s.findings)]
        n_normal = min(n // 2, len(normal))
        n_abnormal = n - n_normal
        if n_abnormal > len(abnormal):
            raise BenchError(f"--stratify: {n_abnormal} abnormal studies asked for, the runs share only "
                             f"{len(abnormal)} (and {len(normal)} normal)")
        chosen = ([normal[i] for i in rng.choice(len(normal), n_normal, replace=False)]
                  + [abnormal[i] for i in rng.choice(len(abnormal), n_abnormal, replace=False)])
        chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    else:
        chosen = [candidates[i] for i in rng.choice(len(candidates), n, replace=False)]
    letters = {}
    for s in chosen:
        order = rng.permutation(len(run_labels))
        letters[s.id] = {string.ascii_uppercase[i]: run_labels[j] for i, j in enumerate(order)}
    dealt: dict[str, list[str]] = {r: [] for r in readers}
    for i, s in enumerate(chosen):
        for k in range(reads):
            dealt[readers[(i * reads + k) % len(readers)]].append(s.id)
    readings = {r: [ids[i] for i in rng.permutation(len(ids))] for r, ids in dealt.items()}
    return Selection(chosen, letters, readings)
