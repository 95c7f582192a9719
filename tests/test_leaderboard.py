import csv
import io
import json

import pytest

from bench.errors import BenchError
from bench.stages.leaderboard import load_board, load_boards, render

BLEU_META = {"name": "bleu", "version": "1", "higher_is_better": True, "level": "corpus",
             "columns": [{"key": "bleu4", "header": "BL4"}]}
CHEXBERT_META = {"name": "chexbert", "version": "1", "higher_is_better": True, "level": "corpus",
                 "columns": [{"key": "chexbert_ma5", "header": "Ma-5"}, {"key": "chexbert_mi14", "header": "Mi-14"}]}
JUDGE_META = {"name": "judge", "version": "1", "higher_is_better": True, "level": "sample",
              "columns": [{"key": "judge_f1", "header": "Judge F1"}]}


BLEU_SIG = {"metric": "bleu", "version": "1", "tok": "ptb-coco", "boot": "study,1000,seed0"}


def write_run(d, run, bleu, fingerprint="abc12345", split="test", judge=None, bleu_sig=None):
    d.mkdir(parents=True)
    sig = bleu_sig or BLEU_SIG
    metrics = {"bleu": {"status": "ok", "metadata": BLEU_META,
                        "signature": {"settings": sig, "text": "|".join(f"{k}:{v}" for k, v in sig.items())},
                        "values": {"bleu4": {"value": bleu, "low": bleu - 0.01, "high": bleu + 0.02},
                                   "bleu1": {"value": 0.5}}},
               "chexbert": {"status": "unavailable", "metadata": CHEXBERT_META,
                            "reason": "weights missing", "remedy": "download them"}}
    if judge is not None:
        metrics["judge"] = {"status": "ok", "metadata": JUDGE_META, "values": {"judge_f1": {"value": 0.4}},
                            "n_scored": 100, "n_failed_samples": 0, **judge}
    (d / "aggregate.json").write_text(json.dumps({
        "run": run, "system": run, "n": 10, "metrics": metrics, "bootstrap": {"unit": "study"},
        "dataset": {"name": "phantom", "fingerprint": fingerprint, "split": split, "unit": "image"}}))


@pytest.fixture
def runs(tmp_path):
    write_run(tmp_path / "a", "nn", 0.031)
    write_run(tmp_path / "b", "reference", 1.0)
    return tmp_path


def test_markdown_headers_come_from_metric_metadata(runs):
    text = render(load_board(runs), "md")
    assert "| run | BL4 | Ma-5 | Mi-14 |" in text  # bleu1 is not a table column of bleu
    assert "| nn | 3.1 [2.1, 5.1] | n/a | n/a |" in text
    assert "| reference | 100.0 [99.0, 102.0] | n/a | n/a |" in text
    assert "chexbert: weights missing Remedy: download them" in text
    assert "interval over studies" in text
    assert "- `metric:bleu|version:1|tok:ptb-coco|boot:study,1000,seed0`" in text


def test_csv_and_html(runs):
    rows = list(csv.reader(io.StringIO(render(load_board(runs), "csv"))))
    assert rows[0][:8] == ["dataset", "fingerprint", "split", "unit", "run", "BL4", "BL4 low", "BL4 high"]
    assert rows[1][4:8] == ["nn", "3.10", "2.10", "5.10"] and rows[1][8] == "n/a"
    assert rows[0][-1] == "signatures" and rows[1][-1] == "metric:bleu|version:1|tok:ptb-coco|boot:study,1000,seed0"
    assert len({len(r) for r in rows}) == 1
    html = render(load_board(runs), "html", intervals=False)
    assert "<td>3.1</td>" in html and 'title="weights missing"' in html


def test_runs_on_other_data_get_their_own_table_and_the_reason(tmp_path):
    write_run(tmp_path / "a", "nn", 0.03)
    write_run(tmp_path / "b", "nn-other-data", 0.05, fingerprint="ffff0000")
    write_run(tmp_path / "c", "nn-validate", 0.05, split="validate")
    write_run(tmp_path / "d", "constant", 0.02)
    boards = load_boards(tmp_path)
    assert [sorted(r for r, _ in b.rows) for b in boards] == [["constant", "nn"], ["nn-other-data"], ["nn-validate"]]
    text = render(boards)
    assert "scored on different data" in text and text.count("| run |") == 3
    with pytest.raises(BenchError, match="different data"):
        load_board(tmp_path)


def test_failures_are_shown_beside_the_value_and_flagged_above_5_percent(tmp_path):
    write_run(tmp_path / "a", "ok", 0.1, judge={"failures": {"failed": 3, "of": 100, "what": "answers unparsed"},
                                               "flagged": False})
    write_run(tmp_path / "b", "bad", 0.1, judge={"failures": {"failed": 9, "of": 100, "what": "answers unparsed"},
                                                "flagged": True})
    text = render(load_board(tmp_path))
    assert "| 40.0 (3/100 failed) |" in text
    assert "| ⚠ 40.0 (9/100 failed) |" in text
    assert "bad, judge: 9 of 100 answers unparsed — over 5%" in text


def test_errors(tmp_path, runs):
    with pytest.raises(BenchError, match="no runs"):
        load_board(tmp_path / "empty")
    with pytest.raises(BenchError, match="md, csv, html"):
        render(load_board(runs), "tex")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "aggregate.json").write_text(json.dumps({"system": "x", "dataset": "phantom", "metrics": {}}))
    with pytest.raises(BenchError, match="older version"):
        load_board(tmp_path)


def test_values_computed_differently_are_refused_naming_the_setting_or_marked(tmp_path):
    write_run(tmp_path / "a", "nn", 0.03)
    write_run(tmp_path / "b", "other-tok", 0.05, bleu_sig={**BLEU_SIG, "tok": "13a"})
    with pytest.raises(BenchError, match=r"bleu values were computed differently.*tok: ptb-coco vs 13a.*--allow-mixed"):
        load_board(tmp_path)
    text = render(load_board(tmp_path, allow_mixed=True))
    assert "| other-tok | ≠ 5.0 [4.0, 7.0] |" in text and "other-tok, bleu: computed differently (tok: ptb-coco vs 13a)" in text
