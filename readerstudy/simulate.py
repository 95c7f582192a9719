"""Simulated readers: fill the study's workbooks as a reader might, to try the whole pipeline
(and the docs' figures) before real readers are asked. Never a result: the workbooks are marked
simulated in their About sheet and every table of the import says so.

The simulated reader judges each sentence against the study's reference findings with the
harness's rule-based CheXpert-style labeller (bench.metrics.chexpert_rules):
- a finding the sentence asserts that the reference does not: delete, misclassification;
  significant for pneumothorax, consolidation, edema, effusion, lesion or fracture, else minor;
- a finding the sentence denies that the reference asserts: edit, omission + misclassification,
  significant;
- certainty that differs (uncertain on one side only): edit, overspecific, minor;
- otherwise keep, or (10%) a style edit: other, no impact.
Each reader has their own seeded noise (5% of verdicts are shifted by one impact level, 5% of
deletes become edits), so several simulated readers agree often but not always.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from openpyxl import load_workbook

from bench.errors import BenchError
from bench.metrics.chexpert_rules import find_mentions, label_report
from bench.metrics.f1 import OBSERVATIONS, POSITIVE, UNCERTAIN
from bench.stages.data import open_run_dataset
from readerstudy.items import by_reader, read_items
from readerstudy.layout import StudyDir
from readerstudy.schema import IMPACTS
from readerstudy.workbook import ABOUT, MARK, SHEET

SERIOUS = {"Pneumothorax", "Consolidation", "Edema", "Pleural Effusion", "Lung Lesion", "Fracture"}


def judge(sentence: str, reference: np.ndarray, rng: np.random.Generator) -> dict:
    verdict = None
    for m in find_mentions(sentence):
        ref = int(reference[OBSERVATIONS.index(m.observation)])
        if m.label == POSITIVE and ref not in (POSITIVE, UNCERTAIN):
            verdict = {"action": "delete", "categories": ["misclassification"],
                       "impact": "significant" if m.observation in SERIOUS else "minor"}
            break
        if m.label != POSITIVE and m.label != UNCERTAIN and ref == POSITIVE:
            verdict = {"action": "edit", "categories": ["omission", "misclassification"], "impact": "significant",
                       "edit": f"{m.observation} is present."}
            break
        if (m.label == UNCERTAIN) != (ref == UNCERTAIN) and ref in (POSITIVE, UNCERTAIN):
            verdict = verdict or {"action": "edit", "categories": ["overspecific"], "impact": "minor",
                                  "edit": sentence}
    if verdict is None:
        verdict = {"action": "keep"} if rng.random() >= 0.1 else \
            {"action": "edit", "categories": ["other"], "impact": "none", "edit": sentence}
    if verdict["action"] != "keep" and rng.random() < 0.05:  # this reader's own view of the impact
        k = IMPACTS.index(verdict["impact"])
        verdict["impact"] = IMPACTS[min(2, max(0, k + (1 if rng.random() < 0.5 else -1)))]
    if verdict["action"] == "delete" and rng.random() < 0.05:
        verdict = {**verdict, "action": "edit", "edit": "(rewritten)"}
    return verdict


def simulate(root: Path, seed: int = 0, cache_dir: Path | None = None) -> list[Path]:
    """Fill every reader's workbook into returned/<reader>-simulated.xlsx; returns the files."""
    study = StudyDir(Path(root)).check()
    manifest = json.loads(study.manifest.read_text())
    run = manifest["runs"][0]
    ds = open_run_dataset(run["identity"], Path(run["path"]), cache_dir)
    refs = {s.id: label_report(s.findings) for s in ds.samples}
    out = []
    for k, (reader, items) in enumerate(sorted(by_reader(read_items(study.items)).items())):
        rng = np.random.default_rng([seed, k])
        answers = {it.row: judge(it.text, refs[it.sample_id], rng) for it in items if not it.empty}
        dest = study.returned / f"{reader}-simulated.xlsx"
        if dest.exists():
            raise BenchError(f"{dest} exists; remove it to simulate again")
        _write(study.workbooks / f"{reader}.xlsx", dest, answers)
        out.append(dest)
    return out


def _write(src: Path, dest: Path, answers: dict[str, dict]) -> None:
    wb = load_workbook(src)
    ws = wb[SHEET]
    col = {c.value: c.column for c in ws[1]}
    for r in range(2, ws.max_row + 1):
        a = answers.get(ws.cell(r, col["row"]).value)
        if a:
            ws.cell(r, col["action"]).value = a["action"]
            for c in a.get("categories", []):
                ws.cell(r, col[c]).value = MARK
            ws.cell(r, col["impact"]).value = a.get("impact")
            ws.cell(r, col["edited sentence"]).value = a.get("edit")
    wb[ABOUT].append(["simulated", "yes: answers written by readerstudy.simulate, not by a reader"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    wb.save(dest)
