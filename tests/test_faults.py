"""Fault injection: real processes killed at several points, damaged caches, concurrent writers.

Each probe asserts the outcome a user must see: a kill loses nothing that was finished and a
re-run ends with exactly what an uninterrupted run writes; damage is a one-line error (exit
2) naming the file; a second writer is refused. The systems and metrics used here are real
third-party plug-ins: a package directory with its own dist-info and entry points, found by
the harness the way an installed package is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PLUGIN = '''
import time
from bench.metrics.base import Metric
from bench.options import OptionsModel
from bench.systems.base import Prediction, System
import numpy as np
import pandas as pd


class Slow(System):
    """Echoes a fixed sentence per query, slowly: long enough to be killed half-way. The delay
    comes from the environment, so that it is not part of the run's identity."""
    name = "slow"
    def generate(self, queries, ctx):
        import os
        for q in queries:
            time.sleep(float(os.environ.get("FAULTPLUG_DELAY", "0.2")))
            yield Prediction(q.id, "No acute cardiopulmonary process. " + q.view, {"view": q.view})


class SlowLength(Metric):
    """Prediction length over reference length, slowly."""
    name = "slowlen"
    columns = ("slowlen",)
    class Options(OptionsModel):
        delay: float = 0.2
    def __init__(self, delay: float = 0.2):
        self.delay = delay
    def per_sample(self, references, predictions):
        out = []
        for r, p in zip(references, predictions):
            time.sleep(self.delay)
            out.append(len(p) / max(1, len(r)))
        return pd.DataFrame({"slowlen": out})
    def aggregate(self, rows):
        return {"slowlen": float(np.mean(rows["slowlen"]))}
'''

ENTRY_POINTS = """[saerad_bench.systems]
slow = faultplug:Slow

[saerad_bench.metrics]
slowlen = faultplug:SlowLength
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """An environment in which the plug-in package is installed (on PYTHONPATH, with dist-info)."""
    site = tmp_path_factory.mktemp("site")
    (site / "faultplug.py").write_text(PLUGIN)
    info = site / "faultplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: faultplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    from bench.data.phantom import generate

    data = tmp_path_factory.mktemp("phantom")
    generate(data, n_train=10, n_test=24, seed=21, image_size=64)
    e = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
         "SAERAD_BENCH_CACHE": str(tmp_path_factory.mktemp("cache"))}
    return e, data


def bench(env, *args, delay: float = 0.0, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from bench.cli import main; main()", *args],
                            env={**env, "FAULTPLUG_DELAY": str(delay)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def wait_for(cond, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting for the process to get there")
        time.sleep(0.05)


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--system", "slow", "--data-root", str(data), "--out", str(out), "--metrics", "bleu,slowlen",
            "--bootstrap", "20", *extra]


def test_kills_during_generation_and_scoring_end_like_an_uninterrupted_run(env, tmp_path):
    e, data = env
    rc, _, err = finish(bench(e, *run_args(data, tmp_path / "clean", "--metric-opt", "slowlen.delay=0.01")))
    assert rc == 0, err
    clean = tmp_path / "clean" / "slow"

    out = tmp_path / "killed"
    preds = out / "slow" / "predictions.jsonl"
    p = bench(e, *run_args(data, out, "--metric-opt", "slowlen.delay=0.01"), delay=0.3)
    wait_for(lambda: lines(preds) >= 5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = lines(preds)
    assert 5 <= killed_at < 24
    # Killed while scoring: generation is finished, the slow metric is running.
    p = bench(e, *run_args(data, out, "--metric-opt", "slowlen.delay=0.3"))
    wait_for(lambda: lines(preds) == 24 and (out / "slow" / "scores.parquet").exists() is False)
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "slow" / "aggregate.json").exists()
    rc, _, err = finish(bench(e, *run_args(data, out, "--metric-opt", "slowlen.delay=0.01")))
    assert rc == 0, err
    assert preds.read_text() == (clean / "predictions.jsonl").read_text()
    a = json.loads((out / "slow" / "aggregate.json").read_text())["metrics"]
    b = json.loads((clean / "aggregate.json").read_text())["metrics"]
    assert {k: v["values"] for k, v in a.items()} == {k: v["values"] for k, v in b.items()}
    man = json.loads((out / "slow" / "manifest.json").read_text())["generate"]
    assert man["status"] == "complete" and man["n_generated_now"] == 0


def test_a_second_run_into_a_busy_run_directory_is_refused(env, tmp_path):
    e, data = env
    out = tmp_path / "busy"
    preds = out / "slow" / "predictions.jsonl"
    first = bench(e, *run_args(data, out), delay=0.2)
    try:
        wait_for(lambda: lines(preds) >= 1)
        rc, _, err = finish(bench(e, *run_args(data, out)))
        assert rc == 2 and "is being written by pid" in err and "Traceback" not in err
    finally:
        first.kill()
        first.wait()
    ids = [json.loads(x)["id"] for x in preds.read_text().splitlines()]
    assert len(ids) == len(set(ids))  # nothing appended twice


def test_a_damaged_run_identity_or_predictions_file_is_a_one_line_error(env, tmp_path):
    e, data = env
    out = tmp_path / "damaged"
    rc, _, err = finish(bench(e, *run_args(data, out, "--metric-opt", "slowlen.delay=0")))
    assert rc == 0, err
    run = out / "slow"
    good = (run / "predictions.jsonl").read_text().splitlines()
    (run / "predictions.jsonl").write_text("\n".join(good[:3] + ["[1, 2]"] + good[3:]) + "\n")
    rc, _, err = finish(bench(e, "score", "--run", str(run), "--metrics", "bleu"))
    assert rc == 2 and "predictions.jsonl:4: expected a JSON object" in " ".join(err.split())
    (run / "run-identity.json").write_text("{not json")
    rc, _, err = finish(bench(e, *run_args(data, out)))
    assert rc == 2 and "run-identity.json is damaged" in " ".join(err.split()) and "Traceback" not in err


def test_a_damaged_llm_cache_is_a_one_line_error_naming_it(env, tmp_path):
    e, _ = env
    cache = tmp_path / "responses.sqlite"
    cache.write_bytes(os.urandom(4096))
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "a", "reference": "No effusion.", "prediction": "No effusion."}) + "\n")
    rc, _, err = finish(bench(e, "radfact", "--predictions", str(preds), "--judge", "openai:http://127.0.0.1:9/v1",
                              "--model", "m", "--cache", str(cache)))
    assert rc == 2 and "Traceback" not in err
    assert f"the LLM response cache {cache} is damaged" in err and "move it away" in err
