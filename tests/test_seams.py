"""The harness's seams: import direction, one registration mechanism, exit codes of the CLI."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import bench.registry as registry
from bench.errors import BenchError

REPO = Path(__file__).resolve().parent.parent
PLUGINS = ("saerad", "baselines", "radfact")


def imported_modules(path: Path) -> set[str]:
    """Every module an .py file imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_bench_never_imports_its_plug_ins():
    offenders = []
    for path in sorted((REPO / "bench").rglob("*.py")):
        for mod in imported_modules(path):
            if mod.split(".")[0] in PLUGINS:
                offenders.append(f"{path.relative_to(REPO)} imports {mod}")
    assert not offenders, "bench/ must not import its plug-ins:\n" + "\n".join(offenders)


def test_the_walk_would_find_an_import_inside_a_function(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from saerad.system import SaeRadSystem\n    import radfact.metric\n")
    assert {"saerad.system", "radfact.metric"} <= imported_modules(f)


def test_sae_library_never_imports_the_harness():
    offenders = [f"{p.relative_to(REPO)} imports {m}" for p in sorted((REPO / "saerad" / "sae").rglob("*.py"))
                 for m in imported_modules(p) if m.split(".")[0] == "bench"]
    assert not offenders, "\n".join(offenders)


def test_builtins_come_from_the_entry_points_declared_in_pyproject():
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    for reg in (registry.systems, registry.metrics, registry.llm_backends, registry.commands):
        assert set(reg.names()) >= set(declared[reg.group])
    from bench.metrics.registry import metric_class
    from bench.systems.registry import system_class

    for name in declared[registry.SYSTEMS]:
        assert system_class(name).name == name
    for name in declared[registry.METRICS]:
        meta = metric_class(name).metadata()
        assert meta["name"] == name and meta["columns"] and isinstance(meta["higher_is_better"], bool)


def _with_extra_entry_points(monkeypatch, *extra: metadata.EntryPoint) -> None:
    real = metadata.entry_points

    def entry_points(group: str):
        return list(real(group=group)) + [ep for ep in extra if ep.group == group]

    monkeypatch.setattr(registry.metadata, "entry_points", entry_points)


def test_a_name_registered_twice_is_an_error_naming_both(monkeypatch):
    _with_extra_entry_points(monkeypatch, metadata.EntryPoint("nn", "thirdparty.nn:Better", registry.SYSTEMS))
    with pytest.raises(registry.DuplicateNameError, match=r"system 'nn' is registered twice: "
                                                          r"baselines.nn:NearestNeighbourSystem.*thirdparty.nn:Better"):
        registry.systems.names()


def test_a_third_party_system_runs_like_a_built_in(tmp_path, monkeypatch, tiny_encoder):
    """A plug-in declared only through the entry-point group is found, validated and run."""
    plugin = tmp_path / "echo_plugin.py"
    plugin.write_text(
        "from bench.options import OptionsModel\n"
        "from bench.systems.base import Prediction, System\n"
        "class Echo(System):\n"
        "    name = 'echo'\n"
        "    class Options(OptionsModel):\n"
        "        text: str = 'No acute findings.'\n"
        "    def generate(self, queries, ctx):\n"
        "        for q in queries:\n"
        "            yield Prediction(q.id, self.options.text, {'view': q.view})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _with_extra_entry_points(monkeypatch, metadata.EntryPoint("echo", "echo_plugin:Echo", registry.SYSTEMS))
    from bench.data.phantom import generate
    from bench.stages.data import DataConfig
    from bench.stages.run import RunRequest, run

    root = tmp_path / "phantom"
    generate(root, n_train=20, n_test=6, seed=1, image_size=64)
    with pytest.raises(BenchError, match="system echo: unknown option.*colour.*valid options: text"):
        run(RunRequest(["echo"], {"echo": {"colour": "red"}}, data=DataConfig(data_root=root), metrics=["rouge"]))
    _, (d,) = run(RunRequest(["echo"], {"echo": {"text": "Lungs are clear."}}, out=tmp_path / "runs",
                             data=DataConfig(data_root=root, cache_dir=tmp_path / "cache"), metrics=["rouge"],
                             n_bootstrap=0))
    preds = [json.loads(x) for x in (d / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 6 and {p["prediction"] for p in preds} == {"Lungs are clear."}


def bench_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from bench.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, needle", [
    (("run",), "Missing option '--system'"),
    (("score",), "either --run DIR"),
    (("run", "--system", "nn", "--opt", "nn.k=3"), "system nn: unknown option(s) k"),
    (("run", "--system", "nn,constant", "--opt", "k=3"), "several systems"),
    (("run", "--system", "nn", "--metrics", "blue"), "unknown metric 'blue'"),
    (("leaderboard", "--runs", "/nonexistent/runs"), "no runs under"),
    (("compare", "/nonexistent/a", "/nonexistent/b"), "not a scored run directory"),
    (("score", "--predictions", "/nonexistent/p.jsonl"), "predictions file not found"),
    (("nosuchcommand",), "No such command"),
    # every other command: a missing argument, and a path that does not exist
    (("generate",), "Missing option '--system'"),
    (("generate", "--system", "nn", "--data-root", "/nonexistent"), "is not a directory"),
    (("data", "export"), "Missing option '--out'"),
    (("data", "export", "--out", "/tmp/x.jsonl", "--data-root", "/nonexistent"), "is not a directory"),
    (("data", "phantom"), "Missing option '--out'"),
    (("encode", "--data-root", "/nonexistent"), "is not a directory"),
    (("check",), "Missing option '--baseline'"),
    (("check", "--run", "/nonexistent/run", "--baseline", "/nonexistent/b.json"), "does not exist"),
    (("sae", "train"), "Missing option '--out'"),
    (("sae", "train", "--out", "/tmp/sae-x"), "give the tokens as --tokens FILE_OR_CACHE_DIR or as --split SPLIT"),
    (("sae", "train", "--tokens", "/nonexistent/t.npy", "--out", "/tmp/sae-x"), "/nonexistent/t.npy"),
    (("sae", "eval"), "Missing option '--sae'"),
    (("sae", "eval", "--sae", "/nonexistent/sae", "--tokens", "/nonexistent/t.npy"), "/nonexistent"),
    (("features", "show"), "Missing option '--sae'"),
    (("features", "show", "1", "--sae", "/nonexistent/sae"), "/nonexistent/sae"),
    (("radfact",), "Missing option '--predictions'"),
    (("radfact", "--predictions", "/nonexistent/p.jsonl", "--judge", "openai:http://127.0.0.1:9/v1", "--model", "m"),
     "/nonexistent/p.jsonl"),
])
def test_usage_and_data_errors_exit_2_with_one_line_and_no_traceback(args, needle):
    r = bench_cli(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert needle in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_help_exits_0():
    r = bench_cli("--help")
    assert r.returncode == 0 and "generate" in r.stdout and "leaderboard" in r.stdout
