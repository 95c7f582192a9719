"""`bench reader-study export`: runs -> a reader-study directory (layout: readerstudy.layout)."""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.manifest import git_revision, package_versions, write_json
from bench.sentences import split_sentences
from bench.stages.data import open_run_dataset
from readerstudy.images import write_png
from readerstudy.items import Item, row_name, write_items
from readerstudy.layout import StudyDir
from readerstudy.runs import load_runs
from readerstudy.schema import ACTIONS, CATEGORIES, IMPACTS
from readerstudy.selection import common_samples, select
from readerstudy.workbook import MARK, write_workbook

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class ExportRequest:
    runs: list[Path]
    out: Path
    n: int = 30
    readers: int = 1
    reader_names: list[str] | None = None
    seed: int = 0
    stratify: bool = False
    reads_per_study: int | None = None
    cache_dir: Path | None = None


def instructions() -> list[str]:
    return [
        "Read each report sentence by sentence, with the image and the indication. For every sentence:",
        f"  action: {', '.join(ACTIONS)}.",
        f"  If you edit or delete it, mark every error category that applies with \"{MARK}\" "
        f"({', '.join(CATEGORIES)}) and choose its clinical impact ({', '.join(IMPACTS)}).",
        "  If you edit it, write the corrected sentence under 'edited sentence'.",
        "  Leave categories, impact and edited sentence blank for a kept sentence.",
        "A row marked as an empty report has no sentence to judge: leave it blank.",
        "Reports are lettered A, B, C... anew for every case; letters do not name systems.",
        "Do not add, remove or move rows or columns. Return the file as it is, under any name.",
    ]


def export(req: ExportRequest) -> dict[str, Any]:
    """Write the study directory; returns the manifest."""
    names = req.reader_names or [f"reader{i + 1}" for i in range(req.readers)]
    if len(set(names)) != len(names) or any(not n.strip() or "/" in n for n in names):
        raise BenchError(f"reader names must be distinct and non-empty, without '/': {names}")
    study = StudyDir(Path(req.out))
    if study.root.exists() and any(study.root.iterdir()):
        raise BenchError(f"{study.root} exists and is not empty; a reader study is exported once into a new "
                         "directory (readers' answers live there)")
    runs = load_runs(req.runs)
    ds = open_run_dataset(runs[0].identity, runs[0].path, req.cache_dir)
    created = not study.root.exists()
    try:
        return _write(req, study, runs, ds, names)
    except BaseException:
        # nothing is half-exported: a failed export leaves no directory behind (it is cheap to redo)
        shutil.rmtree(study.root, ignore_errors=True)
        if not created:
            study.root.mkdir()  # it was there, empty: leave it as it was
        raise


def _write(req: ExportRequest, study: StudyDir, runs: list, ds, names: list[str]) -> dict[str, Any]:
    labels = [r.label for r in runs]
    candidates = common_samples(ds.samples, [set(r.findings) for r in runs], labels)
    sel = select(candidates, labels, req.n, names, req.seed, req.stratify, req.reads_per_study)
    findings = {r.label: r.findings for r in runs}
    sample = {s.id: s for s in sel.samples}

    study.root.mkdir(parents=True, exist_ok=True)
    images = {s.id: f"study-{k + 1:03d}.png" for k, s in enumerate(sel.samples)}
    for s in sel.samples:
        write_png(s.image_path, study.images / images[s.id])

    items: list[Item] = []
    empty_reports = []
    for reader in names:
        for case, sid in enumerate(sel.readings[reader], start=1):
            s = sample[sid]
            for letter, label in sel.letters[sid].items():
                sentences = split_sentences(findings[label][sid])
                if not sentences:
                    empty_reports.append({"sample_id": sid, "run": label})
                    items.append(Item(reader, row_name(case, letter, 0), case, sid, s.study_id, images[sid],
                                      s.indication, letter, 0, ""))
                for k, text in enumerate(sentences, start=1):
                    items.append(Item(reader, row_name(case, letter, k), case, sid, s.study_id, images[sid],
                                      s.indication, letter, k, text))
    write_items(study.items, items)
    export_id = hashlib.sha256(study.items.read_bytes()).hexdigest()[:16]

    key = {"export": export_id, "studies": {sid: {"study_id": sample[sid].study_id, "reports": sel.letters[sid]}
                                            for sid in sel.letters}}
    study.key.parent.mkdir(parents=True, exist_ok=True)
    write_json(study.key, key)
    tokens = {r: secrets.token_urlsafe(16) for r in names}
    write_json(study.readers, {"readers": {r: {"token": tokens[r], "link": f"/r/{tokens[r]}"} for r in names}})

    by_reader: dict[str, list[Item]] = {}
    for it in items:
        by_reader.setdefault(it.reader, []).append(it)
    idle = [r for r in names if not by_reader.get(r)]
    if idle:
        log.warning("%s get no study (%d studies, each read %d times, %d readers); they have no workbook",
                    ", ".join(idle), len(sel.samples), req.reads_per_study or len(names), len(names))
    for reader in (r for r in names if by_reader.get(r)):
        write_workbook(study.workbooks / f"{reader}.xlsx", reader, export_id, by_reader.get(reader, []),
                       study.images, instructions())
    study.returned.mkdir(exist_ok=True)

    unique_empty = {(e["sample_id"], e["run"]) for e in empty_reports}
    manifest = {
        "format": FORMAT_VERSION,
        "export": export_id,
        "settings": {"n": req.n, "readers": names, "seed": req.seed, "stratify": req.stratify,
                     "reads_per_study": req.reads_per_study or len(names),
                     "sentence_splitter": "bench.sentences.split_sentences",
                     "one report per study": "first sample of the study by id"},
        "dataset": {k: runs[0].identity[k] for k in ("dataset", "fingerprint", "split", "unit", "data_root")},
        "runs": [r.summary() for r in runs],
        "studies": len(sel.samples),
        "candidates": len(candidates),
        "sentence_rows": len(items),
        "empty_reports": sorted(f"{sid} ({run})" for sid, run in unique_empty),
        "files": {p.relative_to(study.root).as_posix(): _sha256(p)
                  for p in [study.items, study.key, *sorted(study.images.iterdir()), *sorted(study.workbooks.iterdir())]},
        "versions": package_versions(),
        "git": git_revision(),
    }
    write_json(study.manifest, manifest)
    if unique_empty:
        log.warning("%d reports in the selection are empty; they are kept and shown as empty reports",
                    len(unique_empty))
    return manifest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
