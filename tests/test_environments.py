"""`bench env`: real virtual environments built by pip from requirements files, recorded, listed
and removed; a creation that fails half-way leaves nothing and names the requirement; and the
contract test: `bench run` with a stand-in command that can only run inside its environment.

The fast tests install a stand-in package from a wheel made here (no index is reached); the
real CheXagent and MAIRA-2 environments are built by the slow test at the end."""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.systems.environments import Environments, failing_requirement

REPO = Path(__file__).resolve().parent.parent
BENCH = str(Path(sys.executable).parent / "bench")


def make_wheel(folder: Path, name: str = "standin_model", version: str = "0.1",
               body: str = "VALUE = 'stand-in'\n") -> Path:
    """A minimal pure-Python wheel (PEP 427) with one module, and a RECORD pip accepts."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": body,
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    whl = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return whl


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    whl = make_wheel(folder)
    (folder / "requirements.txt").write_text(f"# the stand-in's only need\n{whl}\n")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, wheels):
    """One real environment with the stand-in package, shared by the fast tests."""
    envs = Environments(tmp_path_factory.mktemp("cache") / "envs")
    return envs, envs.create("tiny", wheels / "requirements.txt")


def test_create_records_the_environment_and_what_pip_installed(built, wheels):
    envs, rec = built
    assert Path(rec.path) == envs.root / "tiny" and Path(rec.python).exists()
    assert rec.packages["standin_model"] == "0.1" and rec.python_version == ".".join(map(str, sys.version_info[:3]))
    assert rec.requirements_sha256 == hashlib.sha256((wheels / "requirements.txt").read_bytes()).hexdigest()
    assert envs.get("tiny") == rec
    on_disk = json.loads(envs.registry_path.read_text())["environments"]["tiny"]
    assert on_disk["packages"]["standin_model"] == "0.1"
    # the package is in the environment, not in the harness's
    out = subprocess.run([rec.python, "-c", "import standin_model; print(standin_model.VALUE)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "stand-in"
    with pytest.raises(ImportError):
        __import__("standin_model")
    # commands run there see its interpreter first and none of our Python path
    env = rec.run_env({"PATH": "/usr/bin", "PYTHONPATH": "/somewhere"})
    assert env["PATH"].startswith(str(Path(rec.python).parent)) and "PYTHONPATH" not in env
    with pytest.raises(BenchError, match="environment 'tiny' exists .*--replace"):
        envs.create("tiny", wheels / "requirements.txt")


def test_a_creation_that_fails_half_way_is_removed_and_names_the_requirement(built, wheels):
    envs, _ = built
    reqs = wheels / "half.txt"
    broken = wheels / "broken_pkg-1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    reqs.write_text(f"{wheels / 'standin_model-0.1-py3-none-any.whl'}\n{broken}\n")
    with pytest.raises(BenchError) as exc:
        envs.create("half", reqs)
    msg = str(exc.value)
    assert f"environment half was not created: pip could not install '{broken}' (line 2)" in msg
    assert "is invalid" in msg and "nothing was kept" in msg and "\n" not in msg
    assert not (envs.root / "half").exists() and not list(envs.root.glob(".building-*"))
    assert "half" not in envs.records() and "tiny" in envs.records()
    log = Path(msg.rsplit("full log: ", 1)[1].rstrip(")"))
    assert "Wheel 'broken-pkg'" in log.read_text()  # pip's own output is kept for the user


def test_failing_requirement_reads_pips_messages():
    lines = ["# pins", "torch==2.13.0", "transformers==9.9  # too new", "/w/broken_pkg-1.0-py3-none-any.whl"]
    assert failing_requirement("ERROR: No matching distribution found for transformers==9.9", lines) == \
        "'transformers==9.9' (line 3)"
    assert failing_requirement("ERROR: Could not find a version that satisfies the requirement Transformers==9.9 "
                               "(from versions: 4.40.0)", lines) == "'transformers==9.9' (line 3)"
    assert failing_requirement("ERROR: Wheel 'broken-pkg' located at /w/broken_pkg-1.0-py3-none-any.whl is invalid.",
                               lines) == "'/w/broken_pkg-1.0-py3-none-any.whl' (line 4)"
    assert failing_requirement("Processing ./x (from -r r.txt (line 2))\nERROR: odd", lines) == "'torch==2.13.0' (line 2)"
    assert failing_requirement("ERROR: something else entirely", lines) == "a requirement"


def test_missing_environments_and_bad_names(tmp_path, built, wheels):
    envs, _ = built
    with pytest.raises(BenchError, match=r"no environment 'nope' in .* \(recorded: tiny\); create it with "
                                         r"`bench env create nope`"):
        envs.get("nope")
    with pytest.raises(BenchError, match="no environment 'nope' to remove"):
        envs.remove("nope")
    with pytest.raises(BenchError, match="use letters, digits"):
        envs.create("../up", wheels / "requirements.txt")
    with pytest.raises(BenchError, match="requirements file .*absent.txt does not exist"):
        envs.create("x", tmp_path / "absent.txt")
    with pytest.raises(BenchError, match="--python python9.9: no such interpreter"):
        envs.create("x", wheels / "requirements.txt", python="python9.9")


def test_remove_deletes_the_directory_and_the_record_and_a_vanished_env_says_how_to_rebuild(tmp_path, wheels):
    envs = Environments(tmp_path / "envs")
    rec = envs.create("gone", wheels / "requirements.txt")
    shutil.rmtree(rec.path)  # deleted by hand
    with pytest.raises(BenchError, match="its interpreter .* is gone; rebuild it with `bench env create gone --replace`"):
        envs.get("gone")
    rec = envs.create("gone", wheels / "requirements.txt", replace=True)
    assert envs.get("gone").python == rec.python
    envs.remove("gone")
    assert not Path(rec.path).exists() and envs.records() == {}


def _other_interpreter() -> str | None:
    """An interpreter other than the harness's, of another Python version, if this machine has one."""
    import glob

    mine = ".".join(map(str, sys.version_info[:3]))
    for cand in ["/usr/bin/python3", *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1*/bin/python3")))]:
        try:
            out = subprocess.run([cand, "-c", "import platform, venv; print(platform.python_version())"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() != mine:
            return cand
    return None


def test_python_option_picks_the_interpreter(tmp_path, wheels):
    other = _other_interpreter()
    if other is None:
        pytest.skip("no second interpreter of another Python version on this machine")
    version = subprocess.run([other, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    rec = Environments(tmp_path / "envs").create("other", wheels / "requirements.txt", python=other)
    assert rec.python_version == version != ".".join(map(str, sys.version_info[:3]))
    assert rec.base_python == other and rec.packages["standin_model"] == "0.1"
    ran = subprocess.run([rec.python, "-c", "import platform, standin_model; print(platform.python_version())"],
                         capture_output=True, text=True)
    assert ran.stdout.strip() == version


# -- the command line ------------------------------------------------------------------------------
@pytest.fixture
def cli(capsys, monkeypatch):
    """`bench ARGS` in this process (a new interpreter costs seconds of imports): (exit code, output),
    with the cache root (where environments are recorded) given per call."""
    from bench.cli import main

    def run(*args: str, cache: Path) -> tuple[int, str]:
        monkeypatch.setenv("SAERAD_BENCH_CACHE", str(cache))
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(list(args))
        out = capsys.readouterr()
        return e.value.code, out.out + out.err

    return run


def error_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("error:")]


def test_cli_create_list_remove_and_its_errors(tmp_path, wheels, cli):
    cache = tmp_path / "cache"
    rc, out = cli("env", "create", "cli-env", "-r", str(wheels / "requirements.txt"), cache=cache)
    assert rc == 0 and "environment cli-env:" in out, out
    rc, out = cli("env", "list", cache=cache)
    assert rc == 0 and "cli-env" in out
    for args, text in [(("env", "create", "nn"), "system 'nn' runs in the harness's environment and keeps no "
                                                 "requirements file; systems that do: chexagent, maira2"),
                       (("env", "create", "nosuchsystem"), "'nosuchsystem' is not a registered system; give its "
                                                           "requirements with -r FILE"),
                       (("env", "remove", "other"), "no environment 'other' to remove (recorded: cli-env)")]:
        rc, out = cli(*args, cache=cache)
        assert rc == 2 and len(error_lines(out)) == 1 and text in error_lines(out)[0], out
        assert "Traceback" not in out
    rc, out = cli("env", "remove", "cli-env", cache=cache)
    assert rc == 0 and not (cache / "envs" / "cli-env").exists()
    assert "no environments in" in cli("env", "list", cache=cache)[1]


# -- the contract test: bench run with a command that runs only in its environment -----------------
STANDIN = textwrap.dedent("""
    import json, sys
    import standin_model  # only the environment has it
    inp, out, root = sys.argv[1:4]
    data = json.load(open(inp))
    json.dump({k: f"{standin_model.VALUE} findings for {v['image_path'][0]}" for k, v in data.items()},
              open(out, "w"))
""")


def test_bench_run_runs_a_stand_in_command_in_its_environment(tmp_path, built, small_phantom, cli, monkeypatch):
    envs, rec = built
    (tmp_path / "standin.py").write_text(STANDIN)
    monkeypatch.chdir(tmp_path)  # the command names its script relative to where bench runs
    args = ["run", "--system", "external", "--opt", "external.env=tiny", "--opt", "external.cmd=python standin.py",
            "--data-root", str(small_phantom), "--limit", "4", "--metrics", "bleu", "--bootstrap", "20"]
    rc, out = cli(*args, "--out", str(tmp_path / "runs"), cache=envs.root.parent)
    assert rc == 0, out
    rows = [json.loads(x) for x in (tmp_path / "runs/external/predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["prediction"].startswith("stand-in findings for files/") for r in rows)
    assert all(r["provenance"]["env"] == "tiny" for r in rows)
    manifest = json.loads((tmp_path / "runs/external/manifest.json").read_text())
    assert manifest["generate"]["system"]["environment"]["packages"]["standin_model"] == "0.1"
    # without its environment the same command cannot import its package: one error line, exit 2
    alone = [a if a != "external.env=tiny" else "external.timeout=60" for a in args]
    rc, out = cli(*alone, "--out", str(tmp_path / "runs2"), cache=envs.root.parent)
    assert rc == 2 and len(error_lines(out)) == 1 and "No module named 'standin_model'" in error_lines(out)[0], out


def test_bench_run_chexagent_without_weights_is_one_line(tmp_path, small_phantom, cli, monkeypatch):
    """The chexagent system through its adapter in an environment: here the harness's own
    (it has torch and huggingface_hub); without weights the run stops with one line."""
    from bench.systems.environments import EnvRecord

    envs = Environments(tmp_path / "cache" / "envs")
    envs.root.mkdir(parents=True)
    envs._write({"chexagent": EnvRecord(name="chexagent", path=sys.prefix, python=sys.executable,
                                        python_version="", base_python=sys.executable, requirements="",
                                        requirements_sha256="", created="")})
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SAERAD_CHEXAGENT_PATH", raising=False)
    rc, out = cli("run", "--system", "chexagent", "--opt", "chexagent.device=cpu", "--data-root", str(small_phantom),
                  "--limit", "2", "--metrics", "bleu", "--out", str(tmp_path / "runs"), cache=tmp_path / "cache")
    assert rc == 2 and len(error_lines(out)) == 1, out
    line = error_lines(out)[0]
    assert "chexagent exited with 2: weights of StanfordAIMI/CheXagent-2-3b are not in the Hugging Face cache" in line
    assert "CC-BY-NC-4.0" in line and "SAERAD_CHEXAGENT_PATH=/path/to/weights" in line


# -- the real environments (minutes each: pip fetches transformers & co.) -------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name,transformers", [("chexagent", "4.40.0"), ("maira2", "4.51.3")])
def test_real_environments_build_and_run_their_adapter_to_the_weights_check(tmp_path, name, transformers):
    cache = tmp_path / "cache"
    made = subprocess.run([BENCH, "env", "create", name], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "SAERAD_BENCH_CACHE": str(cache)})
    assert made.returncode == 0, made.stderr
    rec = Environments(cache / "envs").get(name)
    assert rec.packages["transformers"] == transformers
    imported = subprocess.run([rec.python, "-c", "import torch, transformers; print(transformers.__version__)"],
                              capture_output=True, text=True)
    assert imported.stdout.strip() == transformers, imported.stderr
    # the adapter in its environment: past the input checks, stopped at the missing weights
    img = tmp_path / "f/front.jpg"
    img.parent.mkdir(parents=True)
    img.write_bytes(b"jpeg")
    (tmp_path / "in.json").write_text(json.dumps({"d1": {"image_path": ["f/front.jpg"], "indication": "cough"}}))
    script = REPO / "baselines" / "adapters" / name / "infer.py"
    ran = subprocess.run([rec.python, str(script), "--device", "cpu", str(tmp_path / "in.json"),
                          str(tmp_path / "out.json"), str(tmp_path)], capture_output=True, text=True,
                         env={**rec.run_env(), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stderr
    assert ran.stderr.strip().splitlines()[-1].startswith(f"error: {name}: weights of ")
