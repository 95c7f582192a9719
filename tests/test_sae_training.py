"""Trainer recipe, data scaling, token batches, checkpoints and exact resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy_safetensors
from safetensors.torch import load_file

from saerad.sae import (SAEDataError, SAEError, TrainConfig, Trainer, create_sae, estimate_scale,
                        iter_token_batches, l1_at, load_sae, lr_at, save_sae)
from saerad.sae.checkpoint import load_train_state, read_config
from saerad.sae.trainer import resolve_step_fn

ALL = ["april-update", "gated", "hybrid-gated", "standard", "topk"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tokens(n=512, d=8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * 3.0 + 1.0).astype(np.float32)


def _small(**overrides) -> TrainConfig:
    values = dict(steps=24, batch_size=32, expansion=4, lr=1e-3, log_every=4, checkpoint_every=8,
                  activity_every=2, dead_window_steps=6, fast=False)
    values.update(overrides)
    return TrainConfig(**values)


# --- the recipe ----------------------------------------------------------------------------------

def test_default_config_is_the_papers_recipe():
    c = TrainConfig()
    assert (c.arch, c.expansion, c.steps, c.batch_size) == ("hybrid-gated", 64, 200_000, 2048)
    assert (c.lr, c.lr_warmup_frac, c.lr_decay_frac) == (5e-5, 0.01, 0.2)
    assert (c.l1_coeff, c.l1_warmup_frac) == (8e-3, 0.05)
    assert (c.adam_beta1, c.adam_beta2, c.weight_decay) == (0.9, 0.999, 0.0)


def test_learning_rate_schedule():
    c = TrainConfig(steps=1000, lr=1.0)  # warm-up 10 steps, decay over the last 200
    assert lr_at(0, c) == pytest.approx(0.1)
    assert lr_at(4, c) == pytest.approx(0.5)
    assert lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(500, c) == 1.0
    assert lr_at(799, c) == 1.0
    assert lr_at(800, c) == pytest.approx(1.0)  # (1000 - 800) / 200
    assert lr_at(900, c) == pytest.approx(0.5)
    assert lr_at(999, c) == pytest.approx(1 / 200)
    paper = TrainConfig()
    assert lr_at(1999, paper) == pytest.approx(5e-5) and lr_at(999, paper) == pytest.approx(2.5e-5)
    assert lr_at(180_000, paper) == pytest.approx(5e-5 * 0.5)  # halfway through the last 40k
    assert lr_at(199_999, paper) == pytest.approx(5e-5 / 40_000)


def test_sparsity_schedule():
    c = TrainConfig(steps=1000, l1_coeff=2.0)  # warm-up over 50 steps
    assert l1_at(0, c) == pytest.approx(2.0 / 50)
    assert l1_at(24, c) == pytest.approx(1.0)
    assert l1_at(49, c) == 2.0 and l1_at(999, c) == 2.0
    assert l1_at(9_999, TrainConfig()) == pytest.approx(8e-3)  # 5% of 200k = 10k steps
    assert l1_at(4_999, TrainConfig()) == pytest.approx(4e-3)


def test_bad_config_values_are_errors():
    with pytest.raises(SAEError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(SAEError, match="lr_decay_frac"):
        TrainConfig(lr_decay_frac=1.5)
    with pytest.raises(SAEError, match="valid options"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(SAEError, match="hybrid-gated"):
        TrainConfig(arch="nope")


# --- scaling -------------------------------------------------------------------------------------

def test_estimate_scale_hand_values():
    # Norms 1 and 3 in d = 4: mean 2, c = sqrt(4) / 2 = 1.
    z = np.array([[1.0, 0, 0, 0], [0, 0, 3.0, 0]])
    assert estimate_scale(z) == pytest.approx(1.0)
    # The same tokens split over batches give the same constant.
    z = _tokens(300, 16)
    c = math.sqrt(16) / np.linalg.norm(z.astype(np.float64), axis=1).mean()
    assert estimate_scale(z) == pytest.approx(c, rel=1e-12)
    assert estimate_scale([z[:100], z[100:250], z[250:]]) == pytest.approx(c, rel=1e-12)
    with pytest.raises(SAEDataError):
        estimate_scale(np.zeros((0, 4)))


def test_scale_is_estimated_stored_and_applied(tmp_path):
    z = _tokens()
    trainer = Trainer(_small(steps=2), z, tmp_path / "run")
    sae = trainer.train()
    c = float(sae.scale)
    assert np.linalg.norm(z * c, axis=1).mean() == pytest.approx(math.sqrt(8), rel=1e-5)
    assert float(load_file(str(tmp_path / "run" / "sae.safetensors"))["scale"]) == c
    loaded = load_sae(tmp_path / "run")
    x = torch.from_numpy(z[:16])
    assert torch.equal(loaded.encode(x), loaded.encode_scaled(x * c))
    assert torch.equal(loaded.encode(x), sae.encode(x))


# --- token batches -------------------------------------------------------------------------------

def test_token_batches_cover_each_epoch_once_and_reshuffle():
    z = np.arange(40, dtype=np.float32).reshape(20, 2)  # row i is (2i, 2i+1)
    it = iter_token_batches(z, batch_size=6, seed=3)  # 3 batches per epoch, 2 rows dropped
    epoch0 = [next(it) for _ in range(3)]
    epoch1 = [next(it) for _ in range(3)]
    rows0 = torch.cat(epoch0)[:, 0].long() // 2
    rows1 = torch.cat(epoch1)[:, 0].long() // 2
    assert len(set(rows0.tolist())) == 18 and len(set(rows1.tolist())) == 18
    assert not torch.equal(rows0, rows1)
    # Deterministic in the seed, and start_batch continues the same stream.
    again = list(iter_token_batches(z, 6, seed=3, epochs=2))
    assert all(torch.equal(a, b) for a, b in zip(again, epoch0 + epoch1))
    skipped = iter_token_batches(z, 6, seed=3, start_batch=4)
    assert torch.equal(next(skipped), epoch1[1])


def test_token_files(tmp_path):
    z = _tokens(64, 4)
    np.save(tmp_path / "t.npy", z)
    save_numpy_safetensors({"tokens": z}, str(tmp_path / "t.safetensors"))
    a = next(iter_token_batches(tmp_path / "t.npy", 16, seed=1))
    b = next(iter_token_batches(tmp_path / "t.safetensors", 16, seed=1))
    c = next(iter_token_batches(z, 16, seed=1))
    assert torch.equal(a, c) and torch.equal(b, c)
    with pytest.raises(SAEDataError, match="batch size"):
        next(iter_token_batches(z, 100, seed=0))
    with pytest.raises(SAEDataError, match="does not exist"):
        next(iter_token_batches(tmp_path / "missing.npy", 4))
    np.save(tmp_path / "bad.npy", np.zeros((4, 2, 2), np.float32))
    with pytest.raises(SAEDataError, match="2-D"):
        next(iter_token_batches(tmp_path / "bad.npy", 2))


# --- checkpoints and resume ----------------------------------------------------------------------

@pytest.mark.parametrize("arch", ALL)
def test_checkpoint_round_trip(arch, tmp_path):
    sae = create_sae(arch, d_in=6, expansion=3, seed=5)
    sae.set_scale(0.37)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    save_sae(sae, tmp_path, step=7)
    loaded = load_sae(tmp_path)
    assert type(loaded) is type(sae) and loaded.config == sae.config
    for (name, a), (name_b, b) in zip(sae.state_dict().items(), loaded.state_dict().items()):
        assert name == name_b and torch.equal(a, b), name
    x = torch.randn(5, 6)
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert read_config(tmp_path)["arch"] == arch


def test_checkpoint_uses_the_papers_names(tmp_path):
    save_sae(create_sae("hybrid-gated", d_in=4, expansion=2, seed=0), tmp_path)
    names = set(load_file(str(tmp_path / "sae.safetensors")))
    assert names == {"W_gate", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec", "scale"}


def test_load_rejects_mismatched_weights(tmp_path):
    save_sae(create_sae("standard", d_in=4, expansion=2, seed=0), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["sae_config"]["d_in"] = 5
    cfg["sae_config"]["d_sae"] = 10
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEDataError, match="shape"):
        load_sae(tmp_path)
    with pytest.raises(SAEDataError, match="not an SAE checkpoint"):
        load_sae(tmp_path / "nothing")


def _run(tmp_path, name, config, z, until=None, resume=False):
    trainer = Trainer(config, z, tmp_path / name, resume=resume)
    trainer.train(until_step=until)
    return trainer


def _without_times(history):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in history]


@pytest.mark.parametrize("arch,fast", [("hybrid-gated", False), ("hybrid-gated", True),
                                       ("topk", False), ("gated", False)])
def test_resume_is_bit_for_bit(arch, fast, tmp_path):
    if fast:
        pytest.importorskip("saerad.sae.fast")
    z = _tokens()
    # topk: a short dead window so that the aux loss and its state take part.
    options = {"sae_options": {"k": 3, "dead_tokens": 64}} if arch == "topk" else {}
    config = _small(arch=arch, fast=fast, **options)
    full = _run(tmp_path, "full", config, z)
    first = _run(tmp_path, "split", config, z, until=11)  # stops between checkpoints (8, 16)
    assert first.step == 11
    assert load_train_state(tmp_path / "split")["step"] == 8
    resumed = _run(tmp_path, "split", config, z, resume=True)
    assert resumed.step == config.steps
    for (name, a), (_, b) in zip(full.sae.state_dict().items(), resumed.sae.state_dict().items()):
        assert torch.equal(a, b), name
    for k, v in full.optimizer.state_dict()["state"].items():
        for key in v:
            assert torch.equal(torch.as_tensor(v[key]),
                               torch.as_tensor(resumed.optimizer.state_dict()["state"][k][key]))
    assert _without_times(full.history) == _without_times(resumed.history)
    assert len(full.history) == config.steps // config.log_every


def test_resume_refuses_a_different_recipe(tmp_path):
    z = _tokens()
    _run(tmp_path, "run", _small(), z, until=9)
    with pytest.raises(SAEError, match="differs"):
        Trainer(_small(lr=2e-3), z, tmp_path / "run", resume=True)


def test_training_reduces_the_loss_and_logs_metrics(tmp_path):
    trainer = _run(tmp_path, "run", _small(steps=40, l1_coeff=1e-3), _tokens())
    h = trainer.history
    assert h[-1]["loss"] < h[0]["loss"]
    assert {"loss", "recon", "sparsity", "aux", "l0", "explained_variance", "dead_in_window",
            "lr", "l1_coeff", "step", "tokens_seen"} <= set(h[-1])
    assert h[0]["dead_in_window"] is None and isinstance(h[-1]["dead_in_window"], int)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert _without_times(metrics["history"]) == _without_times(h)


def test_fast_path_only_for_the_unmodified_hybrid_gated():
    sae = create_sae("standard", d_in=4, expansion=2, seed=0)
    assert resolve_step_fn(sae, fast=True)[1] == "StandardSAE.forward_losses"
    from saerad.sae.hybrid_gated import HybridGatedSAE

    class Ablated(HybridGatedSAE):
        def forward_losses(self, x_scaled, l1_coeff):
            return super().forward_losses(x_scaled, 0.0)

    ablated = Ablated(create_sae("hybrid-gated", d_in=4, expansion=2).config)
    assert resolve_step_fn(ablated, fast=True)[1] == "Ablated.forward_losses"
    assert resolve_step_fn(create_sae("hybrid-gated", d_in=4, expansion=2), fast=False)[1] == \
        "HybridGatedSAE.forward_losses"


def test_token_cache_directory_is_read_outside_the_library(tmp_path):
    # The library reads no harness token cache; saerad.harness_tokens turns one into an array.
    from bench.encoders.cache import TokenCache
    from bench.errors import DataError
    from saerad.harness_tokens import load_tokens
    from saerad.sae.tokens import load_token_array

    z = _tokens(40, 4)
    ids = [f"d{i:03d}" for i in range(40)]
    cache = TokenCache(tmp_path, "fp0", dim=4, encoder_name="test")
    with cache.writer() as w:
        w.append(ids, z)
    with pytest.raises(SAEDataError, match="harness_tokens"):
        load_token_array(tmp_path / "fp0")
    whole = load_tokens(tmp_path / "fp0")
    np.testing.assert_array_equal(whole, z)  # sorted ids = insertion order here
    picked = load_tokens(tmp_path / "fp0", ids=["d005", "d001"])
    np.testing.assert_array_equal(picked, z[[5, 1]])
    with pytest.raises(DataError, match="token-cache"):
        load_tokens(z, ids=["d001"])
    with pytest.raises(DataError, match="meta.json"):
        load_tokens(tmp_path, ids=["d001"])
    np.save(tmp_path / "t.npy", z)
    np.testing.assert_array_equal(load_tokens(tmp_path / "t.npy"), z)  # files pass through
    with pytest.raises(SAEDataError, match="does not exist"):
        load_tokens(tmp_path / "missing.npy")
    trainer = Trainer(_small(steps=2, batch_size=8), load_tokens(tmp_path / "fp0", ids[:16]))
    assert trainer.train().d_in == 4
