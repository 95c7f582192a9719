"""`bench compute`: parameters and FLOPs counted from the runs' models, wall time and LLM
tokens from their manifests, beside the paper's quoted figures; each cell says which.

Independent values: parameter counts of the encoder loaded by transformers itself; FLOPs of
the parts whose count follows from their shapes by hand (a multiply-add is 2 FLOPs):
- nn's search: one (1 x d) by (d x N) product = 2 d N;
- the hybrid-gated SAE's features of one token: one (m x d) product (the magnitude path
  reuses the gate's directions, scaled) = 2 d m;
- one SAE training step on a batch of B: forward = gate (2Bdm) + two decodes (h and the
  auxiliary RA, 2Bdm each) = 6Bdm; backward = the gate's weight gradient (2Bdm; the input
  needs none) + weight and input gradients of both decodes (4Bdm each) = 10Bdm; 16Bdm in all.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.compute import MEASURED, QUOTED, UNAVAILABLE, compute_table, encoder_part, measure_run, render_md
from bench.errors import BenchError
from bench.llm.base import ChatRequest, ChatResponse, LLMBackend
from bench.stages.data import DataConfig
from bench.stages.run import RunRequest
from bench.stages.run import run as run_request

BENCH = str(Path(sys.executable).parent / "bench")
SAE = {"expansion": "4", "steps": "40", "batch_size": "16", "lr": "3e-3"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_encoder) -> Path:
    from bench.data.phantom import generate

    tmp = tmp_path_factory.mktemp("compute")
    generate(tmp / "data", n_train=30, n_test=6, seed=6, image_size=64)
    req = RunRequest(systems=["nn", "constant", "saerad"], system_options={"saerad": SAE},
                     # read as MIMIC-CXR: SAE-Rad's phantom recipe (a target-L0 search) is not wanted here
                     data=DataConfig(data_root=tmp / "data", encoder=tiny_encoder, cache_dir=tmp / "cache",
                                     dataset="mimic-cxr"),
                     metrics=["bleu"], out=tmp / "runs", n_bootstrap=10)
    run_request(req)
    return tmp / "runs"


def _gen(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["generate"]


def test_counts_follow_the_models(runs, tiny_encoder):
    import transformers

    net = transformers.AutoModel.from_pretrained(tiny_encoder)
    enc_params = sum(p.numel() for p in net.parameters())
    d = net.config.hidden_size
    nn, const, sae = (measure_run(runs / name) for name in ("nn", "constant", "saerad"))
    n_train = _gen(runs / "nn")["datasets"]["train"]["n"]
    assert nn.cells["training_images"].value == n_train and nn.cells["training_images"].kind == MEASURED

    # nn: a frozen encoder and a search; nothing trained
    assert nn.cells["trained_parameters"].value == 0
    assert nn.cells["inference_parameters"].value == enc_params
    enc = encoder_part(tiny_encoder, n_train)
    assert enc.params == enc_params and enc.train_flops == enc.infer_flops * n_train
    assert nn.cells["inference_tflops_per_report"].value * 1e12 == pytest.approx(enc.infer_flops + 2 * d * n_train)
    assert nn.cells["training_tflops"].value * 1e12 == pytest.approx(enc.infer_flops * n_train)

    # SAE-Rad: the SAE is trained (all its parameters), its features per report, its steps
    ckpt = json.loads((Path(_gen(runs / "saerad")["system"]["sae_dir"]) / "config.json").read_text())
    m, steps, batch = ckpt["sae_config"]["d_sae"], ckpt["train_config"]["steps"], ckpt["train_config"]["batch_size"]
    assert (m, steps, batch) == (4 * d, 40, 16)
    sae_params = sae.cells["trained_parameters"].value
    assert sae_params == 2 * d * m + 3 * m + d  # W_gate, W_dec; b_gate, r_mag, b_mag; b_dec
    assert sae.cells["inference_parameters"].value == enc_params + sae_params
    assert sae.cells["inference_tflops_per_report"].value * 1e12 == pytest.approx(enc.infer_flops + 2 * d * m)
    assert sae.cells["training_tflops"].value * 1e12 == pytest.approx(enc.infer_flops * n_train + 16 * batch * d * m * steps)

    # constant: no model at all
    assert [const.cells[k].value for k in ("trained_parameters", "inference_parameters", "training_tflops")] == [0, 0, 0]


def test_wall_time_and_device_come_from_the_manifest(runs):
    gen = _gen(runs / "saerad")
    cell = measure_run(runs / "saerad").cells["wall_s_per_report"]
    assert cell.kind == MEASURED
    assert cell.value == pytest.approx(gen["timings"]["generate_s"] / gen["n_generated_now"])
    assert gen["encoder"]["device"] == "cpu" and gen["encoder"]["device_name"] in cell.note
    fit = measure_run(runs / "saerad").cells["training_wall_s"]
    assert fit.value == gen["timings"]["fit_s"]
    # no LLM: zero tokens, measured
    assert measure_run(runs / "saerad").cells["llm_tokens_per_report"].value == 0


def test_quoted_columns_beside_measured_ones(runs):
    cols = compute_table([runs / "nn"])
    assert [c.label for c in cols] == ["nn", "SAE-Rad (paper)", "CheXagent (paper)", "MAIRA-2 (paper)"]
    maira = cols[-1].cells
    assert maira["inference_tflops_per_report"].value == 7 and maira["inference_tflops_per_report"].kind == QUOTED
    assert cols[2].cells["training_tflops"].kind == UNAVAILABLE  # "NA" in the paper
    assert cols[0].cells["training_cost_usd"].kind == UNAVAILABLE
    md = render_md(cols)
    assert "| Inference TFLOPs per report (no LLM) |" in md and "7 (quoted)" in md and "(measured)" in md
    assert "Appendix F" in md


def test_what_cannot_be_counted_says_why(tmp_path, runs):
    # a system without compute_parts (a user's command)
    other = tmp_path / "ext"
    shutil.copytree(runs / "constant", other)
    doc = json.loads((other / "manifest.json").read_text())
    doc["generate"]["identity"]["system"] = "external"
    (other / "manifest.json").write_text(json.dumps(doc))
    cell = measure_run(other).cells["training_tflops"]
    assert cell.kind == UNAVAILABLE and "declares no compute_parts" in cell.note
    # an SAE checkpoint that is gone
    gone = tmp_path / "sae"
    shutil.copytree(runs / "saerad", gone)
    doc = json.loads((gone / "manifest.json").read_text())
    doc["generate"]["system"]["sae_dir"] = str(tmp_path / "nowhere")
    (gone / "manifest.json").write_text(json.dumps(doc))
    cell = measure_run(gone).cells["inference_parameters"]
    assert cell.kind == UNAVAILABLE and "nowhere" in cell.note
    with pytest.raises(BenchError, match="not a run directory"):
        measure_run(tmp_path)


class _Tokens(LLMBackend):
    """Fixed token counts per stage, so that tokens per report are known."""

    kind, model = "scripted", "s"

    async def complete(self, req: ChatRequest, timeout: float) -> ChatResponse:
        if "Report 1:" in req.messages[0]["content"]:
            return ChatResponse(text="Reasoning.\n*This feature represents a small left pleural effusion.",
                                prompt_tokens=120, completion_tokens=11)
        return ChatResponse(text="There is a small left pleural effusion.", prompt_tokens=70, completion_tokens=13)


def test_llm_tokens_per_report_from_the_usage_record(tmp_path, runs, tiny_encoder, monkeypatch):
    import bench.llm
    from bench.llm.client import LLMClient

    known = set(inspect.signature(LLMClient).parameters)
    monkeypatch.setattr(bench.llm, "make_client", lambda spec, model, cache_path, **kw: LLMClient(
        _Tokens(), **{k: v for k, v in kw.items() if k in known}))
    root = Path(_gen(runs / "nn")["identity"]["data_root"])
    req = RunRequest(systems=["saerad"], system_options={"saerad": {**SAE, "llm": "openai:http://x", "model": "m"}},
                     data=DataConfig(data_root=root, encoder=tiny_encoder, cache_dir=runs.parent / "cache",
                                     dataset="mimic-cxr"),
                     metrics=["bleu"], out=tmp_path / "runs", n_bootstrap=10)
    run_request(req)
    gen = _gen(tmp_path / "runs" / "saerad")
    n_reports = gen["n_generated_now"]
    n_label = gen["llm"]["saerad"]["stages"]["label"]["calls"]
    col = measure_run(tmp_path / "runs" / "saerad")
    assert col.cells["llm_tokens_per_report"].value == pytest.approx(70 + 13)  # every report one call
    assert col.cells["llm_label_tokens"].value == n_label * (120 + 11) and n_label > 0
    assert n_reports == 6


def test_cli(tmp_path, runs, capsys):
    from bench.cli import main

    r = subprocess.run([BENCH, "compute", "--runs", str(runs)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| | constant | nn | saerad | SAE-Rad (paper) | CheXagent (paper) | MAIRA-2 (paper) |" in r.stdout
    with pytest.raises(SystemExit) as ex:
        main(["compute", "--run", str(runs / "nn"), "-f", "json"])
    assert ex.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["label"] for c in doc["columns"]] == ["nn", "SAE-Rad (paper)", "CheXagent (paper)", "MAIRA-2 (paper)"]
    assert doc["columns"][0]["cells"]["trained_parameters"] == {"value": 0, "kind": "measured", "note": ""}
    with pytest.raises(SystemExit) as ex:
        main(["compute", "--runs", str(tmp_path)])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "error: no run directories under" in err
