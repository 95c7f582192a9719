"""Target sparsity: the lambda search behind ``TrainConfig.target_l0`` / ``--target-l0``.

Synthetic sparse tokens made as in test_sae_recovery.py (d = 16, 64 true directions, ~6
active per token), a hybrid-gated SAE with m = 128, 300 steps of 64 tokens at lr 1e-2; a
trial takes ~0.3 s on one CPU thread. Trials run the whole (short) recipe, so the final
run repeats the accepted trial and its L0 lands within the tolerance.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from saerad.sae import (SAEDataError, SAEError, TargetL0Error, TrainConfig, Trainer, create_sae,
                        evaluate_sae, find_l1_for_target_l0, load_sae, save_sae)
from saerad.sae_cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_toy(n_tokens: int, d: int, n_true: int, active: float, noise: float = 0.01,
             seed: int = 0) -> np.ndarray:
    """Tokens that are sparse non-negative combinations of random unit directions."""
    rng = np.random.default_rng(seed)
    true = rng.normal(size=(n_true, d))
    true /= np.linalg.norm(true, axis=1, keepdims=True)
    on = rng.random((n_tokens, n_true)) < active / n_true
    coef = on * rng.uniform(0.5, 1.5, size=(n_tokens, n_true))
    return (coef @ true + noise * rng.normal(size=(n_tokens, d))).astype(np.float32)


@pytest.fixture(scope="module")
def toy() -> np.ndarray:
    return make_toy(8192, d=16, n_true=64, active=6.0)


def recipe(**overrides) -> TrainConfig:
    values = dict(arch="hybrid-gated", steps=300, batch_size=64, expansion=8, lr=1e-2,
                  l1_coeff=1.0, fast=False, log_every=100, checkpoint_every=300,
                  target_l0_eval_tokens=2048)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory):
    """One calibrated run per target, with its checkpoint."""
    # Module fixtures run before the function-scoped one_torch_thread; two contending threads
    # make these small products ~20x slower on a busy two-core machine.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {}
        for target in (4.0, 12.0):
            out = tmp_path_factory.mktemp(f"l0-{target:g}")
            trainer = Trainer(recipe(target_l0=target), toy, out)
            trainer.train()
            runs[target] = (trainer, out)
    finally:
        torch.set_num_threads(prev)
    return runs


@pytest.mark.parametrize("target", [4.0, 12.0])
def test_final_l0_is_within_tolerance_of_the_target(trained, toy, target):
    trainer, out = trained[target]
    cal = trainer.calibration
    assert cal is not None and cal.final_l0 is not None
    assert abs(cal.final_l0 - target) <= 0.15 * target, cal
    assert 1 <= len(cal.trials) <= 12
    assert trainer.config.l1_coeff == cal.l1_coeff  # the run used the lambda found
    # An independent measurement over all training tokens agrees.
    report = evaluate_sae(trainer.sae, [torch.from_numpy(toy)])
    assert abs(report.l0 - target) <= 0.2 * target, report.l0
    # The checkpoint records the target, the lambda found, every trial and the final L0.
    saved = json.loads((out / "config.json").read_text())["train_config"]
    assert saved["target_l0"] == target and saved["l1_coeff"] == cal.l1_coeff
    recorded = json.loads((out / "metrics.json").read_text())["target_l0"]
    assert recorded["target"] == target and recorded["l1_coeff"] == cal.l1_coeff
    assert recorded["final_l0"] == pytest.approx(cal.final_l0)
    assert [set(t) for t in recorded["trials"]] == [{"l1_coeff", "l0"}] * len(cal.trials)


def test_smaller_target_needs_larger_lambda(trained):
    assert trained[4.0][0].config.l1_coeff > trained[12.0][0].config.l1_coeff
    # Over all trials of both searches, L0 falls as lambda grows.
    trials = sorted(trained[4.0][0].calibration.trials + trained[12.0][0].calibration.trials,
                    key=lambda t: t["l1_coeff"])
    l0s = [t["l0"] for t in trials]
    assert all(a >= b for a, b in zip(l0s, l0s[1:])), trials


def test_resume_keeps_the_lambda_found(trained, toy):
    trainer, out = trained[4.0]
    # A resume with the same target does not search again: no trial runs, same lambda.
    resumed = Trainer(recipe(target_l0=4.0), toy, out, resume=True)
    assert resumed.step == 300 and resumed.config.l1_coeff == trainer.config.l1_coeff
    assert resumed.calibration is not None and resumed.calibration.trials == trainer.calibration.trials


def test_unreachable_target_reports_the_closest(toy):
    # L0 well below one feature per token, with a budget of two trials.
    with pytest.raises(TargetL0Error) as err:
        find_l1_for_target_l0(recipe(target_l0=0.001, target_l0_trials=2), toy)
    e = err.value
    assert e.closest_l0 is not None and e.closest_l1_coeff is not None and len(e.trials) == 2
    message = str(e)
    assert "closest was L0" in message and f"{e.closest_l0:.4g}" in message
    assert f"{e.closest_l1_coeff:.4g}" in message
    assert pickle.loads(pickle.dumps(e)).closest_l0 == e.closest_l0


def test_target_above_the_number_of_features_fails_before_any_trial(toy, monkeypatch):
    import saerad.sae.trainer as trainer_module

    def no_trials(*args, **kwargs):
        raise AssertionError("no trial should run")

    monkeypatch.setattr(trainer_module.Trainer, "train", no_trials)
    with pytest.raises(TargetL0Error, match="number of features \\(128\\)"):
        Trainer(recipe(target_l0=500.0), toy)
    with pytest.raises(SAEError, match="topk"):
        Trainer(recipe(target_l0=4.0, arch="topk"), toy)
    with pytest.raises(SAEError, match="target_l0 must be positive"):
        recipe(target_l0=0.0)


def test_cli_target_l0_end_to_end(toy, tmp_path):
    np.save(tmp_path / "tok.npy", toy)
    out = tmp_path / "sae"
    runner = CliRunner()
    args = ["train", "--tokens", str(tmp_path / "tok.npy"), "--out", str(out), "--expansion", "8",
            "--steps", "300", "--batch-size", "64", "--lr", "1e-2", "--l1", "1.0", "--no-fast",
            "--target-l0", "8", "--target-l0-trials", "8", "--eval-tokens", "2048"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "target L0 8: lambda" in res.output and "final L0" in res.output
    recorded = json.loads((out / "metrics.json").read_text())["target_l0"]
    assert recorded["target"] == 8 and len(recorded["trials"]) >= 1
    assert abs(recorded["final_l0"] - 8) <= 0.15 * 8
    saved = json.loads((out / "config.json").read_text())["train_config"]
    assert saved["l1_coeff"] == recorded["l1_coeff"] and saved["target_l0"] == 8
    # An unreachable target is one line and exit code 2, naming the closest L0 and lambda.
    res = runner.invoke(app, args[:-6] + ["--target-l0", "0.001", "--target-l0-trials", "2",
                                          "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "closest was L0" in res.output and "lambda" in res.output


def test_checkpoint_of_another_width_is_a_clear_error(tmp_path):
    sae = create_sae("hybrid-gated", d_in=16, expansion=2, seed=0)
    save_sae(sae, tmp_path / "sae", step=0)
    loaded = load_sae(tmp_path / "sae")
    wrong = torch.randn(8, 24)
    for call in (loaded.encode, loaded.feature_activations, loaded.reconstruct):
        with pytest.raises(SAEDataError, match="24.*takes 16-d inputs"):
            call(wrong)
    with pytest.raises(SAEDataError, match="takes 16-d inputs"):
        evaluate_sae(loaded, [wrong])
    # The CLI says so before evaluating anything.
    np.save(tmp_path / "wide.npy", wrong.numpy())
    res = CliRunner().invoke(app, ["eval", "--sae", str(tmp_path / "sae"), "--tokens",
                                   str(tmp_path / "wide.npy")])
    assert res.exit_code == 2 and "takes 16-d inputs" in res.output


def test_resume_with_tokens_of_another_width_is_a_clear_error(toy, tmp_path):
    cfg = recipe(steps=4, log_every=2, checkpoint_every=2)
    Trainer(cfg, toy, tmp_path / "run").train(until_step=2)
    with pytest.raises(SAEDataError, match="takes 16-d inputs but the tokens are 8-d"):
        Trainer(cfg, toy[:, :8], tmp_path / "run", resume=True)
