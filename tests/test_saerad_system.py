"""`bench run --system saerad` end to end on a small phantom, offline: predictions with
provenance, cached stages reused, options and config files, the LLM path with a scripted
backend, and the `bench features` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.errors import BenchError
from bench.llm.base import ChatRequest, ChatResponse, LLMBackend
from bench.llm.client import LLMClient
from bench.stages.data import DataConfig
from bench.stages.run import RunRequest
from bench.stages.run import run as run_request
from bench.systems.registry import get_system
from saerad.system import usage_delta

REPO = Path(__file__).resolve().parent.parent
SMALL = {"expansion": "4", "steps": "150", "batch_size": "64", "lr": "3e-3"}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    from bench.data.phantom import generate

    root = tmp_path_factory.mktemp("phantom")
    generate(root, n_train=80, n_test=10, seed=5, image_size=64)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _cfg(out: Path, phantom, enc, cache, **opts) -> RunRequest:
    return RunRequest(systems=["saerad"], system_options={"saerad": {**SMALL, **opts}},
                      data=DataConfig(data_root=phantom, encoder=enc, cache_dir=cache),
                      metrics=["bleu", "rouge"], out=out, n_bootstrap=20)


def run(req: RunRequest) -> Path:
    return run_request(req)[1][0]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["generate"]


def _preds(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_offline_run_writes_predictions_with_provenance(tmp_path, phantom, tiny_encoder, cache):
    out = run(_cfg(tmp_path / "a", phantom, tiny_encoder, cache))
    preds = _preds(out)
    assert len(preds) == 10
    man = _manifest(out)
    sysconf = man["system"]
    labels = json.loads(Path(sysconf["labels"]).read_text())
    by_id = {r["id"]: r for r in labels["features"]}
    assert sysconf["train"]["source"] == "trained" and sysconf["label_counts"]["labelled"] > 0
    # The phantom recipe sets the sparsity by the paper's L0, not by its lambda.
    assert sysconf["train"]["recipe"]["target_l0"] == 15.0
    metrics = json.loads((Path(sysconf["sae_dir"]) / "metrics.json").read_text())
    assert metrics["target_l0"]["target"] == 15.0 and metrics["target_l0"]["trials"]
    for p in preds:
        prov = p["provenance"]
        assert prov["composer"] == "llm-free" and prov["n_active"] == len(prov["active_features"])
        scores = [f["score"] for f in prov["active_features"]]
        assert scores == sorted(scores, reverse=True) and (not scores or scores[0] == 1.0)
        assert all(f["activation"] > 0 for f in prov["active_features"])
        # Every sentence is traced to features whose labels are active descriptions.
        active = {f["id"]: f for f in prov["active_features"]}
        assert p["prediction"] == " ".join(s["text"] for s in prov["sentences"])
        for s in prov["sentences"]:
            assert s["features"] and all(fid in active and active[fid]["description"] for fid in s["features"])
            assert active[s["features"][0]]["description"] == by_id[s["features"][0]]["label"]
    assert any(p["prediction"] for p in preds)
    agg = json.loads((out / "aggregate.json").read_text())
    assert 0 <= agg["metrics"]["bleu"]["values"]["bleu4"]["value"] <= 1

    # A second run with the same inputs reuses the trained SAE, index and labels.
    sae_file = Path(sysconf["sae_dir"]) / "sae.safetensors"
    before = sae_file.stat().st_mtime_ns
    out2 = run(_cfg(tmp_path / "b", phantom, tiny_encoder, cache))
    assert sae_file.stat().st_mtime_ns == before
    assert [p["prediction"] for p in _preds(out2)] == [p["prediction"] for p in preds]
    assert _manifest(out2)["system"]["labels"] == sysconf["labels"]

    # A given SAE and labels file are used as they are; tau removes weak features.
    labels_map = tmp_path / "labels.json"
    labels_map.write_text(json.dumps({str(i): "Left pacemaker." for i in range(200)}))
    out3 = run(_cfg(tmp_path / "c", phantom, tiny_encoder, cache, sae=sysconf["sae_dir"],
                    labels=str(labels_map), tau="1e9"))
    p3 = _preds(out3)
    assert all(p["prediction"] == "" and p["provenance"]["n_active"] == 0 for p in p3)


class _Scripted(LLMBackend):
    kind, model = "scripted", "s"

    def __init__(self):
        self.prompts: list[str] = []

    async def complete(self, req: ChatRequest, timeout: float) -> ChatResponse:
        text = req.messages[0]["content"]
        self.prompts.append(text)
        # Token counts that differ by stage, so the manifest's stage split can be checked.
        if "Report 1:" in text:
            return ChatResponse(text="Looking at the reports...\n*This feature represents a small left pleural effusion.",
                                prompt_tokens=100, completion_tokens=7)
        # The first report asked about always comes back empty (retries included): it falls back
        # to the LLM-free text.
        compose = [t for t in self.prompts if "Report 1:" not in t]
        empty = text == compose[0]
        return ChatResponse(text="" if empty else "There is a small left pleural effusion. No pneumothorax.",
                            prompt_tokens=50, completion_tokens=0 if empty else 9)


def test_llm_path_with_a_scripted_backend(tmp_path, phantom, tiny_encoder, cache, monkeypatch):
    backend = _Scripted()
    import bench.llm

    made: list[dict] = []

    def make_client(spec, model, cache_path, use=None, **kw):
        made.append(kw)
        assert use == "saerad"  # the endpoint file's use SAE-Rad asks for
        return LLMClient(backend, **kw)

    monkeypatch.setattr(bench.llm, "make_client", make_client)
    req = _cfg(tmp_path / "llm", phantom, tiny_encoder, cache, llm="openai:http://x", model="m",
               indication="true", expansion="2", llm_concurrency="3", llm_timeout="45")
    # One of ten reports fell back to the LLM-free text: 10% is over the 5% a run may fall
    # back without saying so, so the run fails, keeping its predictions ...
    with pytest.raises(BenchError, match="1 of 10 predictions of saerad were not made the system's own way"):
        run(req)
    assert made == [{"max_concurrency": 3, "timeout": 45.0}]
    # ... and is kept, marked, with --allow-fallback (nothing is generated again).
    req.allow_fallback = True
    out = run(req)
    assert len(made) == 1
    from bench.stages.leaderboard import load_board

    assert load_board(out).rows[0][0] == "saerad (10% fallback)"
    preds = _preds(out)
    llm_made = [p for p in preds if p["provenance"]["composer"] == "llm"]
    assert len(llm_made) == 9 and sum(p["provenance"]["fallback"] for p in preds) == 1
    assert all(p["prediction"] == "There is a small left pleural effusion. No pneumothorax." for p in llm_made)
    compose_prompts = [t for t in backend.prompts if "Report 1:" not in t]
    # Ten reports; the one whose replies are empty was asked once more per retry (an empty
    # completion is a failed attempt, never an answer).
    assert len(set(compose_prompts)) == 10 and all("<indication>" in t for t in compose_prompts)
    retried = len(compose_prompts) - 10
    assert retried >= 1 and compose_prompts.count(compose_prompts[0]) == retried + 1
    assert all("(importance 1.00) This feature represents a small left pleural effusion." in t for t in compose_prompts)

    # The manifest splits the one client's usage into labelling and composition.
    llm = _manifest(out)["llm"]["saerad"]
    n_label = len(backend.prompts) - len(compose_prompts)
    label, compose = llm["stages"]["label"], llm["stages"]["compose"]
    counts = json.loads(Path(_manifest(out)["system"]["labels"]).read_text())
    assert label["features_asked"] == n_label == counts["meta"]["counts"]["labelled"]
    assert (label["calls"], label["prompt_tokens"], label["completion_tokens"]) == (n_label, 100 * n_label, 7 * n_label)
    assert (compose["reports"], compose["fallbacks"], compose["calls"], compose["prompt_tokens"],
            compose["completion_tokens"]) == (10, 1, 10 + retried, 50 * (10 + retried), 9 * 9)
    assert (compose["retries"], compose["failures"], compose["errors"]) == (retried, 1, {"empty": retried + 1})
    assert llm["usage"]["calls"] == label["calls"] + compose["calls"]


def test_usage_delta_is_the_difference_of_two_snapshots():
    before = {"calls": 3, "prompt_tokens": 30, "call_seconds": 1.25, "errors": {"timeout": 1}}
    after = {"calls": 5, "prompt_tokens": 75, "call_seconds": 2.0, "errors": {"timeout": 1, "http_503": 2}}
    assert usage_delta(after, before) == {"calls": 2, "prompt_tokens": 45, "call_seconds": 0.75,
                                          "errors": {"http_503": 2}}
    assert usage_delta(after, {}) == after


def test_options_and_config_files(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"description": "x", "expansion": 32, "l1": 9e-3, "indication": True}))
    o = get_system("saerad", {"config": str(cfg), "l1": "1e-3", "tau": "0.5", "priors": "yes"}).opts
    assert (o.expansion, o.l1, o.indication, o.priors, o.tau) == (32, 1e-3, True, True, 0.5)
    with pytest.raises(BenchError, match="system saerad: unknown option.*bogus"):
        get_system("saerad", {"bogus": "1"})
    with pytest.raises(BenchError, match="indication='perhaps'.*valid boolean"):
        get_system("saerad", {"indication": "perhaps"})
    with pytest.raises(BenchError, match="top_k='0'.*greater than or equal to 1"):
        get_system("saerad", {"top_k": "0"})
    with pytest.raises(BenchError, match="llm_concurrency"):
        get_system("saerad", {"llm_concurrency": "0"})
    with pytest.raises(BenchError, match="llm_timeout"):
        get_system("saerad", {"llm_timeout": "-1"})
    with pytest.raises(BenchError, match="does not exist"):
        get_system("saerad", {"config": str(tmp_path / "nope.json")})
    for f in sorted((REPO / "configs" / "saerad").glob("*.json")):
        get_system("saerad", {"config": str(f)})  # every shipped ablation config is valid


def test_features_cli_show_grid_label(tmp_path, phantom, tiny_encoder, cache):
    out = run(_cfg(tmp_path / "a", phantom, tiny_encoder, cache))
    d = _manifest(out)["system"]["index_dir"]
    from saerad.cli import features_app
    from saerad.features.index import load_index

    idx = load_index(d)
    fid = int(idx.freq.argmax())
    r = CliRunner().invoke(features_app, ["show", str(fid), "--sae", d], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert f"feature {fid}" in r.output and idx.top(fid)[0][0]["dicom_id"] in r.output
    png = tmp_path / "g.png"
    r = CliRunner().invoke(features_app, ["grid", str(fid), "--sae", d, "--out", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lab = tmp_path / "l.json"
    r = CliRunner().invoke(features_app, ["label", "--sae", d, "--features", f"{fid},0", "--out", str(lab),
                                          "--data-root", str(phantom)])
    assert r.exit_code == 0, r.output
    assert [f["id"] for f in json.loads(lab.read_text())["features"]] == sorted({fid, 0})
    r = CliRunner().invoke(features_app, ["show", "999999", "--sae", d])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_an_sae_of_another_width_is_refused_before_encoding(tmp_path, phantom, tiny_encoder, cache):
    from saerad.sae import create_sae, save_sae

    d = tmp_path / "sae-7"
    save_sae(create_sae("hybrid-gated", d_in=7, d_sae=28, seed=0), d)
    fresh = tmp_path / "fresh-cache"
    with pytest.raises(BenchError, match=r"reads 7-d tokens, but encoder .* gives \d+-d CLS tokens"):
        run(RunRequest(systems=["saerad"], system_options={"saerad": {"sae": str(d)}},
                       data=DataConfig(data_root=phantom, encoder=tiny_encoder, cache_dir=fresh),
                       metrics=["bleu"], out=tmp_path / "out", n_bootstrap=20))
    # Nothing was encoded: the fresh cache holds no token files.
    assert not [p for p in (fresh / "tokens").rglob("*") if p.is_file()]
