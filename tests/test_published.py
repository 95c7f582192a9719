"""Published rows: the citation file holds the paper's Table 1 as printed, each row with its
source; the leaderboard shows them only when asked, marked, beside runs on the same data,
and keeps them out of the measured rows."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from bench.published import compute_figures, load_tables
from bench.stages.leaderboard import PUBLISHED, load_boards, render

BENCH = str(Path(sys.executable).parent / "bench")

# The paper's Table 1 (arXiv:2410.03334), typed in again here from the paper, column order
# RadFact F1, BL4, RG-L, MTR, RGER, Ma-5, Ma-14, Mi-5, Mi-14.
TABLE1 = {
    "Baseline (nearest neighbour)": (30.0, 3.1, 18.6, 23.5, 14.9, 38.3, 25.5, 45.0, 42.8),
    "CheXagent": (36.9, 3.7, 21.5, 21.1, 18.0, 31.5, 22.5, 38.6, 38.1),
    "SAE-Rad (x64)": (37.2, 1.9, 17.1, 29.1, 18.2, 47.2, 34.3, 54.4, 53.2),
    "MAIRA-1": (47.8, 14.2, 28.9, 33.3, 29.6, 47.7, 38.6, 56.0, 55.7),
    "MAIRA-2": (50.4, 23.1, 38.4, 41.7, 39.6, 50.4, 41.6, 59.1, 58.1),
}
KEYS = ("radfact_f1", "bleu4", "rougeL", "meteor", "rger", "chexbert_ma5", "chexbert_ma14", "chexbert_mi5",
        "chexbert_mi14")


def test_citation_file_holds_table1_as_printed_with_sources():
    (table,) = load_tables()
    assert table.dataset == {"name": "mimic-cxr", "split": "test", "unit": "image", "sections": "findings"}
    assert "arXiv:2410.03334" in table.source and "Table 1" in table.source
    assert {r.system: tuple(r.values[k] for k in KEYS) for r in table.rows} == TABLE1
    assert all(r.source for r in table.rows)
    assert "2406.04449" in next(r.source for r in table.rows if r.system == "MAIRA-2")


def test_appendix_f_figures_are_quoted_with_their_source():
    figs = compute_figures()
    assert figs["systems"]["MAIRA-2"]["inference_tflops_per_report"] == 7
    assert figs["systems"]["CheXagent"]["training_tflops"] is None  # "NA" in the paper
    assert figs["systems"]["SAE-Rad"]["training_images"] == 239931
    assert all("Appendix F" in s["source"] for s in figs["systems"].values())


@pytest.fixture(scope="module")
def mimic_runs(tmp_path_factory) -> Path:
    """nn and constant run on a small tree in the MIMIC-CXR-JPG layout, read as MIMIC-CXR."""
    from bench.data.phantom import generate

    tmp = tmp_path_factory.mktemp("pub")
    generate(tmp / "data", n_train=30, n_test=12, seed=4)
    r = subprocess.run([BENCH, "run", "--dataset", "mimic-cxr", "--data-root", str(tmp / "data"), "--system",
                        "nn,constant", "--encoder", "phantom", "--metrics", "bleu,rouge", "--bootstrap", "20",
                        "--out", str(tmp / "runs"), "--cache-dir", str(tmp / "cache")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return tmp / "runs"


def test_published_rows_join_runs_on_the_same_data_marked_and_apart(mimic_runs):
    plain = load_boards(mimic_runs)
    (board,) = load_boards(mimic_runs, published=True)
    assert [n for n, _ in board.rows] == [n for n, _ in plain[0].rows] == ["constant", "nn"]
    assert [[c.value for c in cells] for _, cells in board.rows] == [[c.value for c in cells] for _, cells in plain[0].rows]
    labels = [name for name, _, _ in board.published]
    assert labels == [f"{PUBLISHED} {s} (published)" for s in TABLE1]
    maira2 = dict(zip(board.keys, board.published[-1][1]))
    assert maira2["bleu4"].value == pytest.approx(0.231) and maira2["rougeL"].value == pytest.approx(0.384)
    md = render([board])
    assert f"| {PUBLISHED} MAIRA-2 (published) | 23.1 | 38.4 |" in md
    assert "never used in any statistic" in md
    rows = list(csv.reader(io.StringIO(render([board], "csv"))))
    pub = [r for r in rows if r[4].startswith(PUBLISHED)]
    assert len(pub) == 5 and all(r[-1].startswith("published: ") for r in pub)
    assert all(r[6] == r[7] == "" for r in pub)  # no interval for a quoted value


def test_published_rows_never_join_other_data(tmp_path, mimic_runs):
    r = subprocess.run([BENCH, "leaderboard", "--runs", str(mimic_runs), "--published"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "| † MAIRA-2 (published) |" in r.stdout
    # the same runs read as another dataset: the quoted rows get a table of their own
    boards = load_boards(mimic_runs)
    boards[0].group["name"] = "phantom"
    from bench.stages.leaderboard import add_published

    alone = add_published(boards)
    assert not boards[0].published and len(alone) == 1
    assert alone[0].rows == [] and "not comparable with tables of other data" in alone[0].caption
    assert alone[0].headers == ["RadFact F1", "BL4", "RG-L", "MTR", "RGER", "Ma-5", "Ma-14", "Mi-5", "Mi-14"]
