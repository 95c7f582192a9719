"""SAE metrics (hand-computed), streaming evaluation, plots and the `bench sae` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from saerad.sae import UnknownArchitectureError, create_sae, evaluate_sae, explained_variance
from saerad.sae.metrics import FiringWindow
from saerad.sae_cli import app


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_explained_variance_hand_computed():
    # mean (1, 0); sum ||x - mean||^2 = 1 + 1 = 2; sum ||x - x_hat||^2 = 1  ->  1 - 1/2
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    x_hat = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    assert explained_variance(x, x_hat) == pytest.approx(0.5)
    assert explained_variance(x, x) == 1.0
    # Predicting the mean explains nothing.
    assert explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0)


def _probe_sae(scale: float = 1.0):
    """Feature 0 fires when z0 > 0, feature 1 when z1 > 0, feature 2 never."""
    sae = create_sae("standard", d_in=2, d_sae=3, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, -100.0]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0, 0.6], [0.0, 1.0, 0.8]]))
    sae.set_scale(scale)
    return sae


TOKENS = torch.tensor([[1.0, -1.0], [2.0, -2.0], [0.5, -1.0], [3.0, -0.5], [1.0, -3.0],
                       [-1.0, -1.0], [-2.0, -2.0], [-1.0, 2.0], [-3.0, -1.0], [-0.5, -0.5]])


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_evaluate_sae_on_a_known_code(scale):
    sae = _probe_sae(scale)
    report = evaluate_sae(sae, [TOKENS[:3], TOKENS[3:7], TOKENS[7:]])
    # Feature 0 fires on 5 of 10 tokens, feature 1 on 1, feature 2 never.
    np.testing.assert_allclose(report.feature_frequency, [0.5, 0.1, 0.0])
    assert report.l0 == pytest.approx(0.6)
    assert report.dead_features == 1
    assert report.dense_features == 1  # 0.5 > 0.1; 0.1 is not above the threshold
    # The decoder here is the identity on the positive parts: x_hat = relu(x) per coordinate.
    x = TOKENS.double().numpy() * scale
    x_hat = np.maximum(x, 0)
    sse = ((x - x_hat) ** 2).sum()
    sst = ((x - x.mean(0)) ** 2).sum()
    assert report.explained_variance == pytest.approx(1 - sse / sst, rel=1e-9)
    assert report.mse == pytest.approx(sse / 20, rel=1e-6)
    assert report.recon_loss == pytest.approx(sse / 10, rel=1e-6)
    # Streaming over batches gives the same numbers as one batch.
    whole = evaluate_sae(sae, [TOKENS])
    assert whole.explained_variance == pytest.approx(report.explained_variance, rel=1e-12)


def test_firing_window():
    w = FiringWindow(d_sae=3, window_steps=4)
    h = torch.tensor([[1.0, 0.0, 0.0]])
    w.observe(0, torch.tensor([[0.0, 1.0, 0.0]]))
    w.observe(2, h)
    assert w.dead_count(2) is None  # window not full yet
    assert w.dead_count(3) == 1  # feature 2 never fired in steps 0..3
    assert w.dead_count(4) == 2  # feature 1 last fired at step 0, outside steps 1..4
    w.observe(5, torch.tensor([[0.0, 0.0, 1.0]]))
    assert w.dead_count(5) == 1  # steps 2..5: only feature 1 (last fired at 0) is dead
    assert w.dead_count(6) == 2  # steps 3..6: feature 0 (fired at 2) is dead too
    w2 = FiringWindow(3, 1)
    w2.load_state_dict(w.state_dict())
    assert w2.dead_count(6) == 2 and w2.dead_count(5) == 1


def test_cli_train_eval(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "tok.npy", rng.normal(size=(256, 6)).astype(np.float32))
    out = tmp_path / "sae"
    runner = CliRunner()
    args = ["train", "--tokens", str(tmp_path / "tok.npy"), "--out", str(out), "--arch", "topk",
            "--expansion", "2", "--steps", "8", "--batch-size", "32", "--lr", "1e-3", "--seed", "1",
            "--log-every", "4", "--sae-option", "k=3"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    for name in ("sae.safetensors", "config.json", "metrics.json", "train_state.pt",
                 "loss_curves.png", "feature_density.png"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "topk" and cfg["sae_config"]["k"] == 3 and cfg["train_config"]["seed"] == 1
    res = runner.invoke(app, ["eval", "--sae", str(out), "--tokens", str(tmp_path / "tok.npy"), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output)
    assert result["arch"] == "topk" and result["n_tokens"] == 256 and result["d_sae"] == 12
    assert 0 < result["l0"] <= 3
    assert (out / "eval" / "feature_density.png").is_file()
    # Resuming a finished run keeps its state; a config file is read and overridden.
    (tmp_path / "cfg.json").write_text(json.dumps({"steps": 4, "batch_size": 32, "expansion": 2,
                                                   "fast": False}))
    res = runner.invoke(app, ["train", "--tokens", str(tmp_path / "tok.npy"), "--out",
                              str(tmp_path / "b"), "--config", str(tmp_path / "cfg.json"),
                              "--steps", "6", "--arch", "standard", "--eval-tokens", "0"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "b" / "config.json").read_text())["train_config"]
    assert (saved["steps"], saved["batch_size"], saved["arch"]) == (6, 32, "standard")


def test_cli_errors_are_clear(tmp_path):
    runner = CliRunner()
    np.save(tmp_path / "tok.npy", np.ones((64, 4), np.float32))
    res = runner.invoke(app, ["train", "--tokens", str(tmp_path / "tok.npy"), "--out",
                              str(tmp_path / "x"), "--arch", "sparse-magic"])
    assert res.exit_code == 2 and "hybrid-gated" in res.output and "topk" in res.output
    res = runner.invoke(app, ["eval", "--sae", str(tmp_path / "none"), "--tokens",
                              str(tmp_path / "tok.npy")])
    assert res.exit_code == 2 and "not an SAE checkpoint" in res.output
    res = runner.invoke(app, ["train", "--tokens", str(tmp_path / "tok.npy"), "--out",
                              str(tmp_path / "x"), "--ids", str(tmp_path / "ids.txt")])
    assert res.exit_code == 2 and "ids file" in res.output


def test_cli_mounted_like_bench_raises_bench_error(tmp_path):
    # `bench` mounts the app with add_typer and runs without click's standalone mode, mapping
    # BenchError to one line and exit code 2 itself: the library's error must arrive as one.
    import typer
    from typer.main import get_command

    from bench.errors import BenchError

    root = typer.Typer()
    root.add_typer(app, name="sae")
    np.save(tmp_path / "tok.npy", np.ones((64, 4), np.float32))
    args = ["sae", "train", "--tokens", str(tmp_path / "tok.npy"), "--out", str(tmp_path / "x"),
            "--arch", "sparse-magic"]
    with pytest.raises(BenchError, match="hybrid-gated") as err:
        get_command(root).main(args, standalone_mode=False)
    assert isinstance(err.value.__cause__, UnknownArchitectureError)


def test_cli_reads_a_token_cache_directory(tmp_path):
    from bench.encoders.cache import TokenCache

    z = np.random.default_rng(0).normal(size=(48, 4)).astype(np.float32)
    ids = [f"d{i:03d}" for i in range(48)]
    with TokenCache(tmp_path / "cache", "fp0", dim=4, encoder_name="test").writer() as w:
        w.append(ids, z)
    (tmp_path / "ids.txt").write_text("# train split\n" + "\n".join(ids[:32]) + "\n")
    cache_dir, out = tmp_path / "cache" / "fp0", tmp_path / "sae"
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--tokens", str(cache_dir), "--ids", str(tmp_path / "ids.txt"),
                              "--out", str(out), "--arch", "standard", "--expansion", "2", "--steps", "2",
                              "--batch-size", "16", "--eval-tokens", "0"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "--sae", str(out), "--tokens", str(cache_dir), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_tokens"] == 48  # stdout only: log lines go to stderr
    np.save(tmp_path / "tok.npy", z)
    res = runner.invoke(app, ["eval", "--sae", str(out), "--tokens", str(tmp_path / "tok.npy"),
                              "--ids", str(tmp_path / "ids.txt")])
    assert res.exit_code == 2 and "token-cache directory" in res.output
