"""The external runner: the ReXrank contract, time limits, stderr in the log, resume after a
crash, and ids missing from (or foreign to) the command's output reported by id.

Each test's command is a small Python script run as a real process."""

import json
import logging
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from baselines.external import ExternalSystem, read_output
from bench.context import RunContext
from bench.data.records import Prior, Sample
from bench.errors import BenchError
from bench.systems.registry import get_system


def sample(i: int, root: Path) -> Sample:
    return Sample(id=f"d{i}", dicom_id=f"d{i}", study_id=f"s{i}", subject_id=f"p{i}", split="test", view="PA",
                  image_path=root / f"files/p1/p{i}/s{i}/d{i}.jpg", findings="ref", indication="dyspnea",
                  priors=(Prior("s0", "old text", 3.5, report="FINDINGS: old text"),))


def ctx(tmp: Path) -> RunContext:
    return RunContext(data_root=tmp, dataset_name="test", cache_dir=tmp / "cache", work_dir=tmp / "run")


def queries(tmp: Path, n: int):
    return [sample(i, tmp).query() for i in range(1, n + 1)]


# A stand-in model: writes its output after every sample (as our adapters do), logs the ids it
# was given, and misbehaves on request (MODE): crash after K samples, hang, write foreign ids.
STANDIN = textwrap.dedent("""
    import json, os, sys, time
    inp, out, root = sys.argv[1:4]
    mode, k = os.environ.get("MODE", "ok"), int(os.environ.get("K", "0"))
    data = json.load(open(inp))
    with open(os.environ["CALLS"], "a") as fh:
        fh.write(" ".join(sorted(data)) + "\\n")
    res = json.load(open(out)) if os.path.exists(out) else {}
    print("loading the stand-in model", file=sys.stderr, flush=True)
    for n, (key, rec) in enumerate(sorted(data.items())):
        if mode == "crash" and n == k:
            print("Traceback (most recent call last):", file=sys.stderr)
            print("RuntimeError: CUDA out of memory", file=sys.stderr, flush=True)
            sys.exit(3)
        if mode == "hang" and n == k:
            time.sleep(120)
        if mode == "drop" and n == 0:
            continue
        prior = rec["priors"][0]["report"] if rec["priors"] else "no prior"
        res[key] = rec["image_path"][0] + " | " + rec["indication"] + " | " + prior
        if mode == "foreign":
            res[key + ".jpg"] = res.pop(key)
        tmp = out + ".tmp"
        json.dump(res, open(tmp, "w"))
        os.replace(tmp, out)
        print(f"progress {n + 1}/{len(data)}", end="\\r", file=sys.stderr, flush=True)
    print("", file=sys.stderr)
""")


@pytest.fixture
def standin(tmp_path, monkeypatch):
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("CALLS", str(calls))

    def make(mode="ok", k=0, **opts) -> ExternalSystem:
        monkeypatch.setenv("MODE", mode)
        monkeypatch.setenv("K", str(k))
        return get_system("external", {"cmd": f"{sys.executable} {script}", **opts})

    make.calls = lambda: calls.read_text().splitlines() if calls.exists() else []
    return make


def test_contract_inputs_and_outputs_and_reuse_of_the_output(tmp_path, standin):
    system = standin()
    c = ctx(tmp_path)
    preds = list(system.generate(queries(tmp_path, 2), c))
    assert [p.findings for p in preds] == ["files/p1/p1/s1/d1.jpg | dyspnea | FINDINGS: old text",
                                           "files/p1/p2/s2/d2.jpg | dyspnea | FINDINGS: old text"]
    sent = json.loads((tmp_path / "run/external/input.json").read_text())
    assert sent["d1"]["views"] == ["PA"] and sent["d1"]["priors"][0]["days_before"] == 3.5
    again = list(system.generate(queries(tmp_path, 2), c))  # all in the output: the command is not run again
    assert [p.findings for p in again] == [p.findings for p in preds]
    assert standin.calls() == ["d1 d2"]
    assert c.used["external"]["written"] == 2


def test_a_crash_keeps_what_the_output_holds_and_the_next_attempt_gets_only_the_rest(tmp_path, standin):
    c = ctx(tmp_path)
    got = []
    with pytest.raises(BenchError) as exc:
        for p in standin("crash", k=2).generate(queries(tmp_path, 4), c):
            got.append(p.id)
    msg = str(exc.value)
    assert "exited with 3: RuntimeError: CUDA out of memory" in msg
    assert "the 2 samples it had written" in msg and "2 remain (d3, d4;" in msg
    assert got == ["d1", "d2"]  # yielded before the error: the generate stage keeps them
    assert (tmp_path / "run/external/missing-ids.txt").read_text().split() == ["d3", "d4"]
    # The next attempt (the generate stage asks again for what it lacks) runs only the rest.
    resumed = list(standin("ok").generate(queries(tmp_path, 4)[2:], c))
    assert [p.id for p in resumed] == ["d3", "d4"]
    assert standin.calls() == ["d1 d2 d3 d4", "d3 d4"]
    assert sorted(read_output(tmp_path / "run/external/output.json")) == ["d1", "d2", "d3", "d4"]


def test_per_sample_timeout_stops_a_hung_command_and_keeps_its_samples(tmp_path, standin):
    c = ctx(tmp_path)
    t0 = time.monotonic()
    got = []
    with pytest.raises(BenchError, match=r"wrote no new sample for \d+s \(1s per sample x batch of 1\)") as exc:
        for p in standin("hang", k=1, sample_timeout="1", startup_timeout="5").generate(queries(tmp_path, 3), c):
            got.append(p.id)
    assert time.monotonic() - t0 < 30
    assert got == ["d1"] and "1 samples it had written" in str(exc.value)


def test_per_sample_timeout_allows_the_startup_time_before_the_first_sample(tmp_path, standin):
    # hangs before its first sample: stopped after startup + one sample's time, not sooner
    t0 = time.monotonic()
    with pytest.raises(BenchError, match=r"1s per sample x batch of 1 \+ 2s to start"):
        list(standin("hang", k=0, sample_timeout="1", startup_timeout="2").generate(queries(tmp_path, 2), ctx(tmp_path)))
    assert 3 <= time.monotonic() - t0 < 30


def test_whole_run_timeout(tmp_path, standin):
    t0 = time.monotonic()
    with pytest.raises(BenchError, match="ran past its whole-run limit of 1.5s"):
        list(standin("hang", k=0, timeout="1.5").generate(queries(tmp_path, 2), ctx(tmp_path)))
    assert time.monotonic() - t0 < 20


def test_a_stopped_command_leaves_no_process_behind(tmp_path):
    # the command starts a child and hangs; the whole process group is stopped
    script = tmp_path / "spawn.py"
    pidfile = tmp_path / "child.pid"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(120)
    """))
    system = get_system("external", {"cmd": f"{sys.executable} {script}", "timeout": "1"})
    with pytest.raises(BenchError, match="whole-run limit"):
        list(system.generate(queries(tmp_path, 1), ctx(tmp_path)))
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the command's child {pid} still runs")


def test_stderr_is_streamed_to_the_log_line_by_line(tmp_path, standin, caplog):
    with caplog.at_level(logging.INFO, logger="bench.systems.command"):
        list(standin().generate(queries(tmp_path, 2), ctx(tmp_path)))
    logged = [r.getMessage() for r in caplog.records if r.name == "bench.systems.command"]
    # carriage-return progress updates arrive as lines of their own
    assert logged == ["[external] loading the stand-in model", "[external] progress 1/2", "[external] progress 2/2"]
    assert "progress 2/2" in (tmp_path / "run/external/stderr.log").read_text()


def test_missing_and_unknown_ids_are_reported_by_id(tmp_path, standin):
    with pytest.raises(BenchError) as exc:
        list(standin("drop").generate(queries(tmp_path, 3), ctx(tmp_path)))
    assert "lacks 1 of 3 samples: d1 (all in" in str(exc.value)
    c = ctx(tmp_path / "b")
    with pytest.raises(BenchError) as exc:
        list(standin("foreign").generate(queries(tmp_path, 2), c))
    msg = str(exc.value)
    assert "lacks 2 of 2 samples: d1, d2" in msg and "ids it was not asked for: d1.jpg, d2.jpg" in msg
    assert c.used["external"]["unknown_ids"] == ["d1.jpg", "d2.jpg"]


def test_a_torn_output_file_is_set_aside_not_trusted(tmp_path, standin, caplog):
    work = tmp_path / "run/external"
    work.mkdir(parents=True)
    (work / "output.json").write_text('{"d1": "half a rep')
    preds = list(standin().generate(queries(tmp_path, 1), ctx(tmp_path)))
    assert preds[0].findings.startswith("files/") and list(work.glob("output.torn-*.json"))
    assert "not valid JSON" in caplog.text


def test_failure_names_the_commands_own_error_line(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('some noise', file=sys.stderr)\n"
                      "print('error: mymodel: weights not found', file=sys.stderr)\nprint('bye', file=sys.stderr)\n"
                      "sys.exit(2)\n")
    system = get_system("external", {"cmd": f"{sys.executable} {script}"})
    with pytest.raises(BenchError, match="exited with 2: mymodel: weights not found"):
        list(system.generate(queries(tmp_path, 1), ctx(tmp_path)))


def test_options_and_a_missing_command_or_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SAERAD_BENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BenchError, match="system external: bad option.*cmd: Field required"):
        get_system("external")
    with pytest.raises(BenchError, match="give the command"):
        get_system("external", {"cmd": "  "})
    with pytest.raises(BenchError, match="sample_timeout=.-1.*greater than or equal to 0"):
        get_system("external", {"cmd": "x", "sample_timeout": "-1"})
    with pytest.raises(BenchError, match=r"no environment 'mine' in .*; create it with `bench env create mine`"):
        get_system("external", {"cmd": "python infer.py", "env": "mine"})
    with pytest.raises(BenchError, match=r"no environment 'chexagent'.*bench env create chexagent"):
        get_system("chexagent")
    system = get_system("external", {"cmd": str(tmp_path / "no-such-command")})
    with pytest.raises(BenchError, match="cannot run .*no-such-command"):
        list(system.generate(queries(tmp_path, 1), ctx(tmp_path)))


def test_malformed_output_is_an_error_naming_the_entry(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("import sys, json; json.dump({'d1': 5}, open(sys.argv[2], 'w'))")
    system = get_system("external", {"cmd": f"{sys.executable} {script}"})
    with pytest.raises(BenchError, match="entry 'd1' has no text"):
        list(system.generate(queries(tmp_path, 1), ctx(tmp_path)))


# -- through `bench run`: a crash mid-way, then the same command again -----------------------------
def test_bench_run_resumes_after_the_command_crashed_half_way(tmp_path, small_phantom, standin, capsys, monkeypatch):
    from bench.cli import main

    script = tmp_path / "standin.py"  # written by the standin fixture
    args = ["run", "--system", "external", "--opt", f"external.cmd={sys.executable} {script}", "--data-root",
            str(small_phantom), "--limit", "5", "--metrics", "bleu", "--bootstrap", "20", "--out", str(tmp_path / "runs")]
    preds = tmp_path / "runs/external/predictions.jsonl"

    def bench_run(mode: str, k: int = 0) -> tuple[int, str]:
        monkeypatch.setenv("MODE", mode)
        monkeypatch.setenv("K", str(k))
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(args)
        out = capsys.readouterr()
        return e.value.code, out.out + out.err

    rc, out = bench_run("crash", k=3)
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "RuntimeError: CUDA out of memory" in errors[0], out
    kept = [json.loads(x)["id"] for x in preds.read_text().splitlines()]
    assert len(kept) == 3  # what the command had written is in the run
    rc, out = bench_run("ok")
    assert rc == 0, out
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(rows) == 5 and len({r["id"] for r in rows}) == 5
    first, second = standin.calls()
    assert len(first.split()) == 5 and sorted(second.split()) == sorted(set(first.split()) - set(kept))
