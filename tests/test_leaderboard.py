import csv
import io
import json

import pytest

from bench.errors import BenchError
from bench.leaderboard import load_board, render


def write_run(d, system, bleu, rules_unavailable=False):
    d.mkdir(parents=True)
    metrics = {"bleu": {"status": "ok", "columns": ["bleu4"],
                        "values": {"bleu4": {"value": bleu, "low": bleu - 0.01, "high": bleu + 0.02}}},
               "chexbert": {"status": "unavailable", "columns": ["chexbert_ma5", "chexbert_mi14"],
                            "reason": "weights missing", "remedy": "download them"}}
    (d / "aggregate.json").write_text(json.dumps({"system": system, "dataset": "phantom", "split": "test",
                                                  "unit": "image", "n": 10, "metrics": metrics}))


@pytest.fixture
def runs(tmp_path):
    write_run(tmp_path / "a", "nn", 0.031)
    write_run(tmp_path / "b", "reference", 1.0)
    return tmp_path


def test_markdown_has_table1_headers_values_intervals_and_unavailable_notes(runs):
    text = render(load_board(runs), "md")
    assert "| system | BL4 | Ma-5 | Mi-14 |" in text
    assert "| nn | 3.1 [2.1, 5.1] | n/a | n/a |" in text
    assert "| reference | 100.0 [99.0, 102.0] | n/a | n/a |" in text
    assert "chexbert: weights missing Remedy: download them" in text


def test_csv_and_html(runs):
    rows = list(csv.reader(io.StringIO(render(load_board(runs), "csv"))))
    assert rows[0][:4] == ["system", "BL4", "BL4 low", "BL4 high"]
    assert rows[1][:4] == ["nn", "3.10", "2.10", "5.10"] and rows[1][4] == "n/a"
    html = render(load_board(runs), "html", intervals=False)
    assert "<td>3.1</td>" in html and 'title="weights missing"' in html


def test_errors(tmp_path, runs):
    with pytest.raises(BenchError, match="no runs"):
        load_board(tmp_path / "empty")
    with pytest.raises(BenchError, match="md, csv, html"):
        render(load_board(runs), "tex")
