"""End to end: phantom dataset -> systems -> predictions -> scores -> leaderboard."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchError, DataError, UnknownNameError
from bench.stages.data import DataConfig
from bench.stages.run import RunRequest, run

METRICS = ["bleu", "rouge"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    from bench.data.phantom import generate

    root = tmp_path_factory.mktemp("phantom")
    generate(root, n_train=60, n_test=16, seed=3, image_size=64)
    return root


def request(tmp_path, phantom, encoder, systems=("reference",), out="runs", **kw) -> RunRequest:
    data = kw.pop("data", None) or DataConfig(data_root=phantom, encoder=encoder, cache_dir=tmp_path / "cache")
    base = dict(systems=list(systems), data=data, metrics=list(METRICS), out=tmp_path / out if out else None,
                n_bootstrap=50)
    base.update(kw)
    return RunRequest(**base)


def one(tmp_path, phantom, encoder, system="reference", **kw) -> Path:
    return run(request(tmp_path, phantom, encoder, (system,), **kw))[1][0]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_reference_run_writes_every_file_and_scores_perfectly(tmp_path, phantom, tiny_encoder):
    out = one(tmp_path, phantom, tiny_encoder)
    assert out == tmp_path / "runs" / "reference"
    preds = lines(out / "predictions.jsonl")
    assert len(preds) == 16 and all("reference" not in p for p in preds)  # systems emit text only
    agg = json.loads((out / "aggregate.json").read_text())
    assert agg["metrics"]["bleu"]["values"]["bleu4"]["value"] == pytest.approx(1.0)
    assert agg["metrics"]["rouge"]["values"]["rougeL"]["value"] == pytest.approx(1.0)
    assert agg["bootstrap"]["unit"] == "study" and agg["dataset"]["split"] == "test"
    assert agg["metrics"]["bleu"]["metadata"]["columns"] == [{"key": "bleu4", "header": "BL4"}]
    rows = pd.read_parquet(out / "scores.parquet")
    assert rows["id"].tolist() == [p["id"] for p in preds] and "study_id" in rows
    man = json.loads((out / "manifest.json").read_text())
    assert man["generate"]["status"] == "complete"
    for key in ("identity", "versions", "git", "datasets", "timings", "skipped", "host"):
        assert key in man["generate"]
    assert man["generate"]["datasets"]["test"]["fingerprint"] and man["generate"]["versions"]["torch"]
    assert man["score"]["references"].startswith("dataset phantom")


def test_nn_predicts_the_findings_of_the_closest_training_token(tmp_path, phantom, tiny_encoder):
    out = one(tmp_path, phantom, tiny_encoder, system="nn")
    man = json.loads((out / "manifest.json").read_text())
    assert man["generate"]["encoder"]["fingerprint"]
    from bench.data.mimic import load_split
    from bench.encoders import load_encoder, load_tokens

    fp = load_encoder(tiny_encoder).fingerprint
    train, test = load_split(phantom, "train"), load_split(phantom, "test")
    tr = load_tokens(tmp_path / "cache" / "tokens", fp, [s.dicom_id for s in train.samples]).astype(np.float64)
    te = load_tokens(tmp_path / "cache" / "tokens", fp, [s.dicom_id for s in test.samples]).astype(np.float64)
    nearest = ((te[:, None] - tr[None]) ** 2).sum(-1).argmin(1)
    for p, j in zip(lines(out / "predictions.jsonl"), nearest):
        assert p["provenance"]["neighbour_dicom_id"] == train.samples[j].dicom_id
        assert p["prediction"] == train.samples[j].findings


def test_killed_run_resumes_without_regenerating(tmp_path, phantom, tiny_encoder, monkeypatch):
    out = one(tmp_path, phantom, tiny_encoder)
    text = (out / "predictions.jsonl").read_text().splitlines()
    # Simulate a kill: 10 complete lines and half of the 11th.
    (out / "predictions.jsonl").write_text("\n".join(text[:10]) + "\n" + text[10][:25])
    from baselines.reference import ReferenceSystem

    seen = []
    original = ReferenceSystem.generate

    def counting(self, queries, ctx):
        seen.extend(q.id for q in queries)
        return original(self, queries, ctx)

    monkeypatch.setattr(ReferenceSystem, "generate", counting)
    one(tmp_path, phantom, tiny_encoder)
    assert len(seen) == 6
    assert (out / "predictions.jsonl").read_text().splitlines() == text


def test_resume_and_score_read_references_from_the_dataset_never_from_the_file(tmp_path, phantom, tiny_encoder):
    out = one(tmp_path, phantom, tiny_encoder)
    # An old-style file with stale references in it: the scorer must ignore them.
    stale = [dict(p, reference="something else entirely") for p in lines(out / "predictions.jsonl")]
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in stale))
    from bench.stages.score import prepare_metrics, score_run

    agg = score_run(out, prepare_metrics(["rouge"]), n_bootstrap=0)
    assert agg["metrics"]["rouge"]["values"]["rougeL"]["value"] == pytest.approx(1.0)


def test_system_that_raises_half_way_keeps_its_predictions_and_resumes(tmp_path, phantom, tiny_encoder, monkeypatch):
    from baselines.reference import ReferenceSystem

    original = ReferenceSystem.generate

    def crashing(self, queries, ctx):
        for i, p in enumerate(original(self, queries, ctx)):
            if i == 8:
                raise RuntimeError("CUDA out of memory (simulated)")
            yield p

    monkeypatch.setattr(ReferenceSystem, "generate", crashing)
    with pytest.raises(BenchError, match=r"failed after 8 of 16 predictions.*out of memory.*kept"):
        one(tmp_path, phantom, tiny_encoder)
    out = tmp_path / "runs" / "reference"
    man = json.loads((out / "manifest.json").read_text())
    assert man["generate"]["status"] == "incomplete" and "out of memory" in man["generate"]["error"]
    assert len(lines(out / "predictions.jsonl")) == 8 and not (out / "aggregate.json").exists()
    monkeypatch.setattr(ReferenceSystem, "generate", original)
    one(tmp_path, phantom, tiny_encoder)
    assert len(lines(out / "predictions.jsonl")) == 16
    assert json.loads((out / "manifest.json").read_text())["generate"]["status"] == "complete"


def test_run_dir_made_from_other_data_refuses_to_resume_saying_what_differs(tmp_path, phantom, tiny_encoder):
    one(tmp_path, phantom, tiny_encoder)
    other = tmp_path / "other-data"
    shutil.copytree(phantom, other)
    with pytest.raises(BenchError, match="(?s)other settings.*data_root"):
        one(tmp_path, other, tiny_encoder, data=DataConfig(data_root=other, encoder=tiny_encoder,
                                                           cache_dir=tmp_path / "cache"))
    with pytest.raises(BenchError, match="(?s)other settings.*split"):
        one(tmp_path, phantom, tiny_encoder, data=DataConfig(data_root=phantom, split="validate", encoder=tiny_encoder,
                                                             cache_dir=tmp_path / "cache"))


def test_default_run_directory_names_the_data(tmp_path, phantom, tiny_encoder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parent, dirs = run(request(tmp_path, phantom, tiny_encoder, out=None))
    from bench.data.mimic import load_split

    fp = load_split(phantom, "test").fingerprint
    assert parent == Path("runs") / f"phantom-{fp[:8]}-test" and dirs == [parent / "reference"]


def test_option_errors_come_before_any_work(tmp_path, phantom, tiny_encoder, monkeypatch):
    import bench.stages.run as stages_run

    def no_data(*a, **k):
        raise AssertionError("the data was read before the options were checked")

    monkeypatch.setattr(stages_run, "open_context", no_data)
    with pytest.raises(BenchError, match="unknown option.*taux.*valid options"):
        run(request(tmp_path, phantom, tiny_encoder, systems=["saerad"], system_options={"saerad": {"taux": "1"}}))
    with pytest.raises(BenchError, match=r"--opt for system.*not in this run: saerad"):
        run(request(tmp_path, phantom, tiny_encoder, system_options={"saerad": {"tau": "1"}}))
    with pytest.raises(UnknownNameError, match="choose one of"):
        run(request(tmp_path, phantom, tiny_encoder, systems=["gpt-9"]))
    with pytest.raises(UnknownNameError, match="bleu"):
        run(request(tmp_path, phantom, tiny_encoder, metrics=["blue"]))
    with pytest.raises(BenchError, match="metric chexbert: bad option.*batch_size"):
        run(request(tmp_path, phantom, tiny_encoder, metrics=["chexbert"],
                    metric_options={"chexbert": {"batch_size": "many"}}))
    with pytest.raises(BenchError, match=r"--metric-opt for metric.*not in this run: radfact"):
        run(request(tmp_path, phantom, tiny_encoder, metric_options={"radfact": {"mode": "batched"}}))
    assert not (tmp_path / "runs").exists()


def test_unavailable_judge_is_reported_before_generation(tmp_path, phantom, tiny_encoder, monkeypatch):
    """A judge that refuses connections: radfact is unavailable with the reason, found before the system runs."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from baselines.reference import ReferenceSystem

    order = []
    original = ReferenceSystem.generate
    monkeypatch.setattr(ReferenceSystem, "generate",
                        lambda self, q, ctx: (order.append("generate"), original(self, q, ctx))[1])
    import bench.stages.run as stages_run

    real_prepare = stages_run.prepare_metrics

    def prepare(*a, **k):
        out = real_prepare(*a, **k)
        order.append("checked")
        return out

    monkeypatch.setattr(stages_run, "prepare_metrics", prepare)
    out = one(tmp_path, phantom, tiny_encoder, metrics=["radfact", "rouge"],
              metric_options={"radfact": {"judge": f"openai:http://127.0.0.1:{port}/v1", "model": "judge"}})
    assert order == ["checked", "generate"]
    agg = json.loads((out / "aggregate.json").read_text())
    assert agg["metrics"]["radfact"]["status"] == "unavailable"
    assert "refused" in agg["metrics"]["radfact"]["reason"]
    assert agg["metrics"]["rouge"]["status"] == "ok"


def test_corrupt_and_truncated_images_are_skipped_and_listed(tmp_path, phantom, tiny_encoder):
    root = tmp_path / "data"
    shutil.copytree(phantom, root)
    from bench.data.mimic import load_split

    victims = [s.image_path for s in load_split(root, "test").samples[:2]]
    victims[0].write_bytes(b"not a jpeg at all")
    data = victims[1].read_bytes()
    victims[1].write_bytes(data[: len(data) // 2])
    out = one(tmp_path, root, tiny_encoder, system="nn",
              data=DataConfig(data_root=root, encoder=tiny_encoder, cache_dir=tmp_path / "cache"))
    man = json.loads((out / "manifest.json").read_text())
    skipped = {s["path"] for s in man["generate"]["skipped"]["test"]}
    assert {str(v) for v in victims} <= skipped
    assert json.loads((out / "aggregate.json").read_text())["n"] == 14


def test_bad_data_gives_clear_errors(tmp_path, phantom, tiny_encoder):
    with pytest.raises(DataError, match="not a directory"):
        run(request(tmp_path, phantom, tiny_encoder, data=DataConfig(data_root=tmp_path / "nowhere")))
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(phantom / "mimic-cxr-2.0.0-metadata.csv.gz", partial)
    with pytest.raises(DataError, match="mimic-cxr-2.0.0-split.csv"):
        run(request(tmp_path, phantom, tiny_encoder, data=DataConfig(data_root=partial)))


def test_several_systems_share_one_parent_and_one_table(tmp_path, phantom, tiny_encoder):
    parent, dirs = run(request(tmp_path, phantom, tiny_encoder, systems=["reference", "constant"],
                               labels={"constant": "mode"}))
    assert [d.name for d in dirs] == ["reference", "mode"] and all(d.parent == parent for d in dirs)
    from bench.stages.leaderboard import load_boards, render

    boards = load_boards(parent)
    assert len(boards) == 1
    text = render(boards)
    assert "| reference | 100.0" in text and "| mode |" in text


def test_compare_runs_paired_test(tmp_path, phantom, tiny_encoder):
    from bench.stages.compare import compare_runs

    _, (a, b) = run(request(tmp_path, phantom, tiny_encoder, systems=["reference", "constant"]))
    same, _ = compare_runs(a, a, n_permutations=200)
    assert all(r.p_value == 1.0 for r in same)
    diff, _ = compare_runs(a, b, n_permutations=200)
    by_col = {r.column: r for r in diff}
    assert by_col["rougeL"].a == pytest.approx(1.0) and by_col["rougeL"].p_value < 0.01


def test_a_second_writer_of_a_run_directory_is_refused(tmp_path, phantom, tiny_encoder):
    """While one process holds a run directory, another `bench run` into it refuses; it never appends."""
    import subprocess
    import sys
    import time

    out = one(tmp_path, phantom, tiny_encoder)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from bench.stages.generate import run_lock\n"
        f"with run_lock(Path({str(out)!r})):\n    print('locked', flush=True); time.sleep(30)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (out / "predictions.jsonl").read_bytes()
        t0 = time.perf_counter()
        with pytest.raises(BenchError, match=r"is being written by pid \d+"):
            one(tmp_path, phantom, tiny_encoder)
        assert time.perf_counter() - t0 < 20 and (out / "predictions.jsonl").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    one(tmp_path, phantom, tiny_encoder)  # the lock dies with its process: no stale lock


def test_every_value_carries_a_signature_and_compare_refuses_mixed_ones(tmp_path, phantom, tiny_encoder):
    import pyarrow.parquet as pq

    from bench.stages.compare import compare_runs

    _, (a, b) = run(request(tmp_path, phantom, tiny_encoder, systems=["reference", "constant"]))
    agg = json.loads((a / "aggregate.json").read_text())
    text = agg["metrics"]["rouge"]["signature"]["text"]
    assert text.startswith("metric:rouge|version:") and "tok:" in text and text.endswith("boot:study,50,seed0")
    meta = json.loads(pq.read_schema(a / "scores.parquet").metadata[b"saerad_bench.signatures"])
    assert meta["rouge"] == text
    changed = json.loads((b / "aggregate.json").read_text())
    changed["metrics"]["rouge"]["signature"]["settings"]["tok"] = "13a"
    (b / "aggregate.json").write_text(json.dumps(changed))
    with pytest.raises(BenchError, match=r"rouge was computed differently.*tok: .* vs 13a"):
        compare_runs(a, b, n_permutations=50)
    results, notes = compare_runs(a, b, n_permutations=50, allow_mixed=True)
    assert any(r.mixed for r in results if r.metric == "rouge") and any("computed differently" in n for n in notes)


def test_the_same_data_through_a_relative_or_absolute_path_is_the_same_run(tmp_path, phantom, tiny_encoder,
                                                                           monkeypatch):
    monkeypatch.chdir(phantom.parent)
    rel = DataConfig(data_root=Path(phantom.name), encoder=tiny_encoder, cache_dir=tmp_path / "cache")
    out = one(tmp_path, phantom, tiny_encoder, data=rel)
    ident = json.loads((out / "run-identity.json").read_text())
    assert ident["data_root"] == str(phantom.resolve())  # stored resolved
    one(tmp_path, phantom, tiny_encoder)  # the absolute path resumes the same run: no refusal


def test_bench_score_reads_a_users_file_with_or_without_references(tmp_path, phantom, tiny_encoder):
    """The same scoring path for a user's file: its own references (and study ids), or the dataset's."""
    from typer.testing import CliRunner

    from bench.cli import build_app

    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in [
        {"id": "a", "reference": "No effusion.", "prediction": "", "study_id": "s1"},
        {"id": "b", "reference": "No effusion.", "prediction": "No effusion.", "study_id": "s1"},
        {"id": "c", "reference": "Left pleural effusion.", "prediction": "Left pleural effusion.", "study_id": "s2"}]))
    r = CliRunner().invoke(build_app(), ["score", "--predictions", str(f), "-m", "rouge", "--bootstrap", "20",
                                         "--out", str(tmp_path / "scored")])
    assert r.exit_code == 0, r.output
    agg = json.loads((tmp_path / "scored" / "aggregate.json").read_text())
    assert agg["empty_predictions"] == 1 and agg["bootstrap"]["unit"] == "study" and agg["bootstrap"]["n_studies"] == 2
    assert agg["metrics"]["rouge"]["values"]["rougeL"]["value"] == pytest.approx(2 / 3)
    # Without references: joined from the dataset by id; every sample needs a prediction.
    from bench.data.mimic import load_split

    samples = load_split(phantom, "test").samples
    g = tmp_path / "noref.jsonl"
    g.write_text("".join(json.dumps({"id": s.id, "prediction": s.findings}) + "\n" for s in samples))
    r = CliRunner().invoke(build_app(), ["score", "--predictions", str(g), "--data-root", str(phantom), "-m", "rouge",
                                         "--bootstrap", "0", "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["rouge"]["values"]["rougeL"]["value"] == pytest.approx(1.0)
    g.write_text("".join(json.dumps({"id": s.id, "prediction": s.findings}) + "\n" for s in samples[:-1]))
    with pytest.raises(DataError, match="have no prediction"):
        from bench.predictions import read_predictions
        from bench.stages.data import DataConfig
        from bench.stages.score import score_input

        score_input(read_predictions(g), g, DataConfig(data_root=phantom, cache_dir=tmp_path / "cache"))


def test_the_system_is_closed_before_scoring_also_after_a_crash(tmp_path, phantom, tiny_encoder, monkeypatch):
    """What a system holds (an LLM client and the managed server it started) is released once
    generation stops, so a metric judged by the same endpoint finds the port free."""
    from baselines.reference import ReferenceSystem
    from bench.metrics.nlg import RougeMetric

    events: list[str] = []
    original_generate, original_score = ReferenceSystem.generate, RougeMetric.per_sample
    monkeypatch.setattr(ReferenceSystem, "close", lambda self: events.append("close"), raising=False)

    def scoring(self, *a, **kw):
        events.append("score")
        return original_score(self, *a, **kw)

    monkeypatch.setattr(RougeMetric, "per_sample", scoring)
    one(tmp_path, phantom, tiny_encoder, metrics=["rouge"])
    assert events[0] == "close" and events.count("close") == 1 and "score" in events

    def crashing(self, queries, ctx):
        yield from ()
        raise RuntimeError("the model crashed")

    events.clear()
    monkeypatch.setattr(ReferenceSystem, "generate", crashing)
    with pytest.raises(BenchError, match="the model crashed"):
        one(tmp_path, phantom, tiny_encoder, out="runs2")
    assert events == ["close"]
    monkeypatch.setattr(ReferenceSystem, "generate", original_generate)
