"""`bench counterfactual`: interventions, sampling, training with resume after a kill, panels, masks,
eval, and the refusals (a feature beyond the SAE's width, an unknown image, a model of another encoder).

Everything runs on a small phantom with a tiny random Dinov2, a random SAE and a diffusion model
of a few thousand parameters trained for a few steps: the numbers mean nothing here, the paths do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from bench.errors import BenchError
from saerad.counterfactual import checkpoint as ck
from saerad.counterfactual.cli import counterfactual_app
from saerad.counterfactual.config import DiffusionConfig
from saerad.counterfactual.evaluate import mean_interval, pointing_hit, reduce_mask, top_region_iou
from saerad.counterfactual.intervene import check_feature, decompose, do, token_with
from saerad.counterfactual.model import TokenConditionedUNet
from saerad.counterfactual.sample import sample
from saerad.sae import create_sae, save_sae

TINY = {"image_size": 16, "space_to_depth": 2, "block_out_channels": [8, 8, 16], "attention": [False, True, True],
        "norm_num_groups": 4, "attention_head_dim": 4, "cond_channels": 1, "cond_grid": 4, "epochs": 2,
        "batch_size": 8, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    from bench.data.phantom import generate

    root = tmp_path_factory.mktemp("phantom")
    generate(root, n_train=60, n_test=24, seed=5, image_size=64)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory) -> Path:
    sae = create_sae("standard", d_in=32, expansion=4, seed=0)  # the tiny encoder's 32-d tokens
    return save_sae(sae, tmp_path_factory.mktemp("sae"))


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.json"
    p.write_text(json.dumps(TINY))
    return p


def _invoke(args: list[str]):
    return CliRunner().invoke(counterfactual_app, args, env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, phantom, tiny_encoder, cache, tiny_config) -> Path:
    out = tmp_path_factory.mktemp("diffusion")
    r = _invoke(["train", "--out", str(out), "--config", str(tiny_config), "--data-root", str(phantom),
                 "--encoder", tiny_encoder, "--cache-dir", str(cache)])
    assert r.exit_code == 0, r.output
    return out


def _common(phantom, tiny_encoder, cache, model_dir, sae_dir) -> list[str]:
    return ["--data-root", str(phantom), "--encoder", tiny_encoder, "--cache-dir", str(cache),
            "--model", str(model_dir), "--sae", str(sae_dir), "--steps", "2"]


# -- interventions ------------------------------------------------------------------------------------
def test_interventions_follow_app_d():
    torch.manual_seed(0)
    sae = create_sae("standard", d_in=12, expansion=3, seed=1)
    sae.set_scale(0.7)
    z = torch.randn(5, 12)
    d = decompose(sae, z)
    # Changing nothing returns the token itself: the error term restores what the SAE misses.
    assert torch.allclose(token_with(sae, d, d.h), z, atol=1e-5)
    # do(i, beta) moves the token along decoder column i by (beta - h_i), in token units.
    i, beta = 7, 2.5
    moved = token_with(sae, d, do(d.h, i, beta)) - z
    expected = (beta - d.h[:, i:i + 1]) * sae.W_dec[:, i].detach() / sae.scale
    assert torch.allclose(moved, expected, atol=1e-5)
    assert torch.equal(do(d.h, i, 0.0)[:, i], torch.zeros(5))
    assert torch.equal(do(d.h, i, 0.0)[:, :i], d.h[:, :i])
    with pytest.raises(BenchError, match="beyond this SAE's width: it has 36 features"):
        check_feature(sae, 36)
    with pytest.raises(BenchError, match="takes 12-d tokens"):
        decompose(sae, torch.randn(2, 13))


# -- model and sampling -------------------------------------------------------------------------------
def test_same_noise_for_every_image_of_a_call():
    cfg = DiffusionConfig.from_dict(TINY)
    torch.manual_seed(0)
    m = TokenConditionedUNet(cfg, 6).eval()
    z = torch.randn(2, 6)
    for kind, steps in (("ddim", 3), ("ddpm", 2)):
        a = sample(m, torch.stack([z[0], z[0], z[1]]), seed=4, steps=steps, scheduler=kind)
        assert a.shape == (3, 1, 16, 16)
        assert torch.equal(a[0], a[1])  # same token, same noise: the same image
        assert not torch.equal(a[0], a[2])  # the token matters
        b = sample(m, z[:1], seed=4, steps=steps, scheduler=kind)
        assert torch.allclose(a[0], b[0], atol=1e-5)  # and the batch does not
    # The token reaches the UNet as extra input channels: the first conv sees 4 + 1 channels.
    assert m.unet.conv_in.in_channels == cfg.space_to_depth ** 2 + cfg.cond_channels


# -- localisation measures ----------------------------------------------------------------------------
def test_pointing_game_and_iou_by_hand():
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    diff = np.zeros((8, 8))
    diff[4, 4] = 1.0  # one pixel diagonally off the mask
    assert not pointing_hit(diff, mask, dilate=0)
    assert not pointing_hit(diff, mask, dilate=1)  # 4-connected dilation does not reach the diagonal
    diff[4, 4], diff[4, 3] = 0.0, 1.0
    assert pointing_hit(diff, mask, dilate=1) and not pointing_hit(diff, mask, dilate=0)
    diff = np.zeros((8, 8))
    diff[2, 2:4] = 3.0
    diff[6, 6:8] = 2.0  # top 4 = two inside, two outside: IoU 2 / 6
    assert top_region_iou(diff, mask) == pytest.approx(2 / 6)
    full = np.zeros((16, 16), bool)
    full[5, 9] = True
    red = reduce_mask(full, 4)
    assert red.sum() == 1 and red[1, 2]
    iv = mean_interval([1, 0, 1, 1])
    assert iv.value == 0.75 and 0.0 <= iv.low <= 0.75 <= iv.high <= 1.0 and iv.n == 4


# -- training ---------------------------------------------------------------------------------------
def test_training_writes_a_checkpoint_that_loads(model_dir, tiny_encoder):
    meta = ck.read_meta(model_dir)
    model, _ = ck.load_model(model_dir)
    assert meta["token_dim"] == 32 and meta["encoder"]["name"] == tiny_encoder
    assert meta["step"] == ck.weights_step(model_dir) > 0
    hist = json.loads((model_dir / ck.HISTORY_FILE).read_text())
    assert len(hist["train"]) == meta["step"] and len(hist["val"]) == TINY["epochs"]
    assert (model_dir / ck.LOSS_PLOT).read_bytes()[:4] == b"\x89PNG"
    # token statistics are those of the training tokens, not the defaults
    assert not torch.equal(model.token_std, torch.ones(32))


@pytest.mark.slow  # three training processes, each importing torch, transformers and diffusers
def test_a_killed_training_resumes_from_its_last_checkpoint(tmp_path, phantom, tiny_encoder, cache, tiny_config):
    cfg = json.loads(tiny_config.read_text())
    cfg.update(epochs=6, checkpoint_every=1)
    cfg_path = tmp_path / "c.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-c", "from bench.cli import main; main()", "counterfactual", "train", "--config", str(cfg_path),
            "--data-root", str(phantom), "--encoder", tiny_encoder, "--cache-dir", str(cache)]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(base + ["--out", str(killed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (killed / ck.TRAIN_STATE_FILE).exists() and ck.load_train_state(killed)["step"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stdout.read().decode()[-400:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped = ck.load_train_state(killed)["step"]  # what resume starts from (the weights may be one ahead)
    total = ck.read_meta(killed)["data"]["n_train"] // cfg["batch_size"] * cfg["epochs"]
    assert 3 <= stopped < total
    r = subprocess.run(base + ["--out", str(killed)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"from step {stopped} of {total}" in r.stdout + r.stderr
    # The resumed run is the uninterrupted run, step for step.
    whole = tmp_path / "whole"
    r = subprocess.run(base + ["--out", str(whole)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    a, _ = ck.load_model(killed)
    b, _ = ck.load_model(whole)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name
    # Another architecture in the same directory is refused, not mixed in.
    cfg["block_out_channels"] = [8, 16, 16]
    cfg_path.write_text(json.dumps(cfg))
    r = subprocess.run(base + ["--out", str(killed)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "another config (block_out_channels" in r.stdout + r.stderr


# -- show, mask, eval ----------------------------------------------------------------------------------
def test_show_writes_the_figure_4_row(tmp_path, phantom, tiny_encoder, cache, model_dir, sae_dir):
    out = tmp_path / "panel.png"
    r = _invoke(["show", "--feature", "3", "--beta", "2.0", "--out", str(out)]
                + _common(phantom, tiny_encoder, cache, model_dir, sae_dir))
    assert r.exit_code == 0, r.output
    assert str(out) in r.output
    with Image.open(out) as im:
        assert im.size[0] > 4 * im.size[1] / 1.5  # five panels side by side


def test_mask_writes_the_thresholded_difference(tmp_path, phantom, tiny_encoder, cache, model_dir, sae_dir):
    out = tmp_path / "m.png"
    r = _invoke(["mask", "--feature", "3", "--beta", "4.0", "--threshold", "0.5", "--out", str(out)]
                + _common(phantom, tiny_encoder, cache, model_dir, sae_dir))
    assert r.exit_code == 0, r.output
    m = np.asarray(Image.open(out))
    assert m.shape == (64, 64) and set(np.unique(m)) <= {0, 255} and (m == 255).any()


def test_eval_reports_checks_and_localisation(tmp_path, phantom, tiny_encoder, cache, model_dir, sae_dir):
    import pandas as pd

    t = pd.read_csv(phantom / "phantom-labels.csv.gz")
    t = t[(t.split == "test") & t.ViewPosition.isin(["PA", "AP"])]
    finding = max(("pacemaker", "sternotomy_wires", "cardiomegaly"), key=lambda f: t[f].sum())
    out = tmp_path / "eval.json"
    r = _invoke(["eval", "--findings", finding, "--features", "5", "--n", "3", "--out", str(out)]
                + _common(phantom, tiny_encoder, cache, model_dir, sae_dir))
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    loc = doc["rows"][0]["localisation"]
    assert loc["finding"] == finding and loc["n"] == min(3, int(t[finding].sum()))
    for key in ("hit_rate", "random_hit_rate", "iou", "random_iou"):
        assert 0.0 <= loc[key]["low"] <= loc[key]["value"] <= loc[key]["high"] <= 1.0
    c = doc["rows"][1]["checks"]
    assert doc["rows"][1]["target"] == "feature 5" and c["n"] == 3
    assert 0.0 <= c["effectiveness_order"]["value"] <= 1.0
    assert c["reversibility_pixels"]["value"] >= 0.0 and c["composition_token"]["value"] >= 0.0
    assert "pointing hit rate" in out.with_suffix(".md").read_text()


# -- refusals ----------------------------------------------------------------------------------------
def test_refusals(tmp_path, phantom, tiny_encoder, cache, model_dir, sae_dir):
    from helpers.tiny_dinov2 import save_tiny_dinov2

    common = _common(phantom, tiny_encoder, cache, model_dir, sae_dir)
    r = _invoke(["show", "--feature", "128"] + common)  # the SAE has 4 x 32 = 128 features
    assert r.exit_code == 2 and "feature 128 is beyond this SAE's width: it has 128 features" in r.output
    r = _invoke(["show", "--feature", "1", "--image", "no-such-dicom"] + common)
    assert r.exit_code == 2 and "image 'no-such-dicom' is not in this split" in r.output
    r = _invoke(["eval", "--findings", "pacemakr"] + common)
    assert r.exit_code == 2 and "unknown finding 'pacemakr'" in r.output
    # A model trained on another encoder's tokens: same width, other weights; then another width.
    other = save_tiny_dinov2(tmp_path / "other", seed=9)
    args = [a if a != tiny_encoder else str(other) for a in common]
    r = _invoke(["show", "--feature", "1"] + args)
    assert r.exit_code == 2 and "was trained on tokens of encoder" in r.output and "fingerprint" in r.output
    wide = save_tiny_dinov2(tmp_path / "wide", hidden_size=48)
    args = [a if a != tiny_encoder else str(wide) for a in common]
    r = _invoke(["show", "--feature", "1"] + args)
    assert r.exit_code == 2 and "was trained on 32-d tokens" in r.output and "gives 48-d tokens" in r.output
