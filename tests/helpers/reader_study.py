"""Reader-study test helpers: runs made by the harness's own stages on a small phantom, and
a returned workbook filled in cell by cell as a reader fills it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from openpyxl import load_workbook

from bench.stages.data import DataConfig
from bench.stages.run import RunRequest, run
from bench.stages.score import prepare_metrics, score_run

METRICS = ["bleu", "rouge"]


def shared_runs(tmp_path_factory, encoder: str) -> dict[str, Path]:
    """`make_runs`, made once per test session and shared by the reader-study test modules."""
    root = tmp_path_factory.getbasetemp() / "reader-study-runs"
    names = ("nn", "constant", "reference", "blanked")
    if (root / "done").exists():
        return {n: root / ("runs-blank" if n == "blanked" else "runs") / n for n in names}
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    runs = make_runs(root, encoder)
    (root / "done").touch()
    return runs


def make_runs(root: Path, encoder: str) -> dict[str, Path]:
    """nn, constant and reference runs on a 16-image phantom, scored with BLEU and ROUGE-L, and
    'blanked': the constant run with the first three predictions emptied, scored again."""
    from bench.data.phantom import generate

    phantom = root / "phantom"
    generate(phantom, n_train=60, n_test=16, seed=3, image_size=64)
    data = DataConfig(data_root=phantom, encoder=encoder, cache_dir=root / "cache")
    _, dirs = run(RunRequest(systems=["nn", "constant", "reference"], data=data, metrics=METRICS,
                             out=root / "runs", n_bootstrap=20))
    runs = {d.name: d for d in dirs}
    blank = root / "runs-blank" / "blanked"
    shutil.copytree(runs["constant"], blank)
    ident = json.loads((blank / "run-identity.json").read_text())
    ident["label"] = "blanked"
    (blank / "run-identity.json").write_text(json.dumps(ident))
    lines = [json.loads(x) for x in (blank / "predictions.jsonl").read_text().splitlines()]
    for rec in lines[:3]:
        rec["prediction"] = ""
    (blank / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    score_run(blank, prepare_metrics(METRICS), n_bootstrap=20, cache_dir=root / "cache")
    runs["blanked"] = blank
    return runs


def fill_workbook(src: Path, dest: Path, answers: dict[str, dict]) -> None:
    """Type answers into a copy of a reader's workbook: {row: {action, categories, impact, edit}}."""
    wb = load_workbook(src)
    ws = wb["Sentences"]
    header = [c.value for c in ws[1]]
    col = {h: i + 1 for i, h in enumerate(header)}
    for r in range(2, ws.max_row + 1):
        row = ws.cell(r, col["row"]).value
        a = answers.get(row)
        if not a:
            continue
        ws.cell(r, col["action"]).value = a.get("action") or None
        for c in a.get("categories", []):
            ws.cell(r, col[c]).value = "x"
        ws.cell(r, col["impact"]).value = a.get("impact") or None
        ws.cell(r, col["edited sentence"]).value = a.get("edit") or None
    dest.parent.mkdir(parents=True, exist_ok=True)
    wb.save(dest)
