"""`--endpoints FILE` on bench run / generate / score: one endpoint file for every LLM use.

Checked: each use the file's [uses] table names gets `@FILE` as the option its plug-in
declares (SAE-Rad's `llm`, RadFact's and GREEN's `judge`) and the built system and metrics
take their endpoint from it; a use the file does not name keeps its default (`uses.default`
does not switch SAE-Rad to its LLM variant); an option given on the command line wins, and
the log says so; a use no selected plug-in asks is a warning; a name no installed plug-in
asks is an error before any work, listing the known uses. End to end: `bench score` with
RadFact and GREEN judged by two scripted servers named in one file, with the hand-computed
values, each server asked only by its own use, and the file in the run's manifest.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from llm_server import FaultServer, completion
from test_green import HALF, PERFECT
from test_radfact_pipeline import STUDIES, scripted_answer

from bench.errors import BenchError
from bench.llm.endpoints import EndpointFileError, LLMUse, apply_endpoint_file, llm_use_of
from bench.options import NoOptions

REPO = Path(__file__).resolve().parents[1]

ENDPOINTS = """
    [endpoints.judge]
    url = "http://127.0.0.1:9/v1"
    model = "judge-model"

    [endpoints.green]
    url = "http://127.0.0.1:9/v1"
    model = "green-model"
"""

EVERY_USE = """
    [uses]
    saerad = "judge"
    radfact = "judge"
    green = "green"
"""


def write(tmp_path: Path, uses: str, endpoints: str = ENDPOINTS) -> Path:
    p = tmp_path / "llm.toml"
    p.write_text(textwrap.dedent(uses) + textwrap.dedent(endpoints))
    return p


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from bench.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}, timeout=300)


def test_each_named_use_gets_the_file_and_the_plugins_take_their_endpoint_from_it(tmp_path):
    from bench.metrics.registry import get_metric
    from bench.systems.registry import get_system

    f = write(tmp_path, EVERY_USE)
    spec = f"@{f.resolve()}"
    sys_opts, met_opts = apply_endpoint_file(f, ["saerad", "reference"], {"saerad": {"top_k": "5"}},
                                             ["radfact", "green", "bleu"], {"green": {"max_tokens": "100"}})
    assert sys_opts == {"saerad": {"top_k": "5", "llm": spec}}  # other options untouched
    assert met_opts == {"radfact": {"judge": spec}, "green": {"max_tokens": "100", "judge": spec}}
    assert get_system("saerad", sys_opts["saerad"]).opts.llm == spec
    # Each metric resolves the file under its own use: the model its signature names is the file's.
    assert get_metric("radfact", met_opts["radfact"], tmp_path).model == "judge-model"
    assert get_metric("green", met_opts["green"], tmp_path).model == "green-model"


def test_a_use_the_file_does_not_name_keeps_its_default(tmp_path, caplog):
    from bench.systems.registry import get_system

    f = write(tmp_path, """
        [uses]
        default = "judge"
        radfact = "judge"
    """)
    with caplog.at_level(logging.INFO, logger="bench.llm.endpoints"):
        sys_opts, met_opts = apply_endpoint_file(f, ["saerad"], {}, ["radfact", "green"], {})
    assert sys_opts == {}  # uses.default does not turn SAE-Rad's LLM on
    assert get_system("saerad", sys_opts.get("saerad")).opts.llm == "none"
    assert met_opts == {"radfact": {"judge": f"@{f.resolve()}"}}
    assert "does not name saerad, so saerad.llm keeps its default" in caplog.text
    assert "does not name green, so green.judge keeps its default" in caplog.text


def test_an_option_given_on_the_command_line_wins_and_the_log_says_so(tmp_path, caplog):
    f = write(tmp_path, EVERY_USE)
    with caplog.at_level(logging.INFO, logger="bench.llm.endpoints"):
        sys_opts, met_opts = apply_endpoint_file(
            f, ["saerad"], {"saerad": {"llm": "none"}}, ["radfact", "green"],
            {"radfact": {"judge": "openai:http://gpu:8000/v1", "model": "other"}})
    assert sys_opts == {"saerad": {"llm": "none"}}
    assert met_opts == {"radfact": {"judge": "openai:http://gpu:8000/v1", "model": "other"},
                        "green": {"judge": f"@{f.resolve()}"}}
    assert "--opt saerad.llm=none given on the command line wins over --endpoints" in caplog.text
    assert "--metric-opt radfact.judge=openai:http://gpu:8000/v1 given on the command line wins" in caplog.text


def test_a_known_use_this_command_does_not_run_is_a_warning(tmp_path, caplog):
    f = write(tmp_path, """
        [uses]
        saerad = "judge"
        green = "green"
    """)
    with caplog.at_level(logging.INFO, logger="bench.llm.endpoints"):
        _, met_opts = apply_endpoint_file(f, [], {}, ["radfact", "bleu"], {})
    assert met_opts == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "uses.green" in warnings[0] and "uses.saerad" in warnings[1]
    assert all("this command's LLM uses: radfact" in w for w in warnings)


def test_an_unknown_use_is_an_error_listing_the_known_ones(tmp_path):
    f = write(tmp_path, """
        [uses]
        radfcat = "judge"
    """)
    with pytest.raises(EndpointFileError, match=r"names radfcat, which no installed system or metric asks an LLM "
                                                r"under \(a typo\?\); the known uses are green, radfact, saerad"):
        apply_endpoint_file(f, [], {}, ["radfact"], {})


def test_bench_run_refuses_an_unknown_use_in_one_line_before_any_work(tmp_path):
    f = write(tmp_path, """
        [uses]
        sae-rad = "judge"
    """)
    out = tmp_path / "runs"
    r = bench("run", "-s", "reference", "-m", "bleu", "--endpoints", str(f), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and "names sae-rad" in lines[0] and "green, radfact, saerad" in lines[0]
    assert not out.exists()  # nothing generated, nothing written


def test_an_llm_option_a_plugin_does_not_have_is_its_error():
    class Broken:
        llm_option = "llm"
        Options = NoOptions

    class Fine:
        llm_option = "judge"
        llm_use = None

        class Options:
            model_fields = {"judge": None}

    with pytest.raises(BenchError, match="system broken declares llm_option = 'llm', which is not one of its options"):
        llm_use_of("system", "broken", Broken)
    assert llm_use_of("metric", "fine", Fine) == LLMUse("metric", "fine", "judge", "fine")  # named by its name


def test_bench_score_judges_radfact_and_green_from_one_file(tmp_path):
    prompt = tmp_path / "green-prompt.txt"
    prompt.write_text("REFERENCE: {reference}\nCANDIDATE: {candidate}")
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": s.id, "reference": s.reference, "prediction": s.prediction}) + "\n"
                             for s in STUDIES))

    def green(body: dict, n: int):  # s1 gets HALF (0.5), the other four PERFECT (1.0)
        return completion(HALF if "Small left effusion" in body["messages"][-1]["content"] else PERFECT)

    with FaultServer(lambda body, n: completion(scripted_answer(body["messages"])), models=["judge-model"]) as rf, \
            FaultServer(green, models=["green-model"]) as gr:
        f = write(tmp_path, EVERY_USE, ENDPOINTS.replace("127.0.0.1:9/v1", rf.url.split("//")[1], 1)
                      .replace("127.0.0.1:9/v1", gr.url.split("//")[1], 1))
        r = bench("score", "--predictions", str(preds), "-m", "radfact,green", "--endpoints", str(f),
                  "--metric-opt", "radfact.mode=batched", "--metric-opt", f"green.prompt={prompt}",
                  "--bootstrap", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
                  cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    agg = json.loads((tmp_path / "out" / "aggregate.json").read_text())["metrics"]
    assert agg["radfact"]["values"]["radfact_f1"]["value"] == pytest.approx(65 / 97)  # test_radfact_pipeline
    assert agg["green"]["values"]["green_score"]["value"] == pytest.approx((0.5 + 4 * 1.0) / 5)
    # Each server was asked only by its own use, under the model the file names.
    assert rf.total_hits > 0 and {b["model"] for b in rf.bodies} == {"judge-model"}
    assert gr.total_hits == 5 and {b["model"] for b in gr.bodies} == {"green-model"}
    assert all(b["messages"][-1]["content"].startswith("REFERENCE: ") for b in gr.bodies)
    # The manifest records the file and the endpoint each metric used; the log says what it set
    # and that no system of `bench score` asks under uses.saerad.
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())["score"]["metrics"]
    for metric, endpoint in (("radfact", "judge"), ("green", "green")):
        assert manifest[metric]["judge"] == f"@{f.resolve()}"
        assert manifest[metric]["llm"]["endpoint_file"] == {"file": str(f.resolve()), "endpoints": [endpoint]}
    assert f"radfact.judge=@{f.resolve()} (--endpoints, uses.radfact = judge)" in r.stderr
    assert "asks under uses.saerad, so it is not used" in r.stderr
