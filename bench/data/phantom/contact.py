"""A contact sheet: a grid of phantom images captioned with their planted findings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from bench.data.phantom.findings import FINDINGS
from bench.errors import DataError

_SHORT = {
    "cardiomegaly": "cardiomeg.",
    "pleural_effusion_left": "L effusion",
    "pleural_effusion_right": "R effusion",
    "pneumothorax": "PTX",
    "consolidation": "consolid.",
    "edema": "edema",
    "atelectasis": "atelect.",
    "nodule": "nodule",
    "rib_fracture": "rib fx",
    "pacemaker": "pacer",
    "endotracheal_tube": "ETT",
    "central_line": "CVC",
    "sternotomy_wires": "sternotomy",
}


def _pick(labels: pd.DataFrame, n: int) -> pd.DataFrame:
    """One clear (non-subtle) example of each finding first, then normals, then the rest."""
    frontal = labels[labels["ViewPosition"].isin(["PA", "AP"])].reset_index(drop=True)
    chosen: list[int] = []
    for name in FINDINGS:
        hit = frontal.index[(frontal[name] == 1) & ~frontal["subtle"].fillna("").str.contains(name)]
        hit = [i for i in hit if i not in chosen]
        if hit and len(chosen) < n:
            chosen.append(hit[0])
    normal = frontal.index[frontal[list(FINDINGS)].sum(axis=1) == 0]
    for i in list(normal[:2]) + list(frontal.index):
        if len(chosen) >= n:
            break
        if i not in chosen:
            chosen.append(i)
    return frontal.loc[chosen]


def contact_sheet(root: Path, out_png: Path, n: int = 16, columns: int = 4) -> Path:
    """Save a grid of `n` frontal phantoms of the dataset at `root`, captioned, as a PNG."""
    root, out_png = Path(root), Path(out_png)
    table = root / "phantom-labels.csv.gz"
    if not table.exists():
        raise DataError(f"{table} not found; is {root} a phantom dataset (bench data phantom --out DIR)?")
    labels = pd.read_csv(table, dtype={"dicom_id": str, "subtle": str}, keep_default_na=False)
    rows = _pick(labels, n)
    tile, caption = 256, 28
    ncols = min(columns, len(rows))
    nrows = -(-len(rows) // ncols)
    sheet = Image.new("L", (ncols * tile, nrows * (tile + caption)), 255)
    draw = ImageDraw.Draw(sheet)
    for k, (_, r) in enumerate(rows.iterrows()):
        sid = str(r["subject_id"])
        path = root / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{r['study_id']}" / f"{r['dicom_id']}.jpg"
        img = Image.open(path).convert("L").resize((tile, tile))
        x, y = (k % ncols) * tile, (k // ncols) * (tile + caption)
        sheet.paste(img, (x, y))
        subtle = set(filter(None, str(r["subtle"]).split(";")))
        names = [(_SHORT[f] + ("?" if f in subtle else "")) for f in FINDINGS if r[f] == 1]
        text = f"{r['ViewPosition']}: " + (", ".join(names) if names else "normal")
        draw.text((x + 4, y + tile + 2), text[:34], fill=0)
        if len(text) > 34:
            draw.text((x + 4, y + tile + 14), text[34:68], fill=0)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png
