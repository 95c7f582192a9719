"""Training of the token-conditioned DDPM (paper App. D, Eq. 12), with checkpoints and resume.

Each step draws a batch of training images, uniform timesteps t in [0, 1000) and Gaussian noise,
noises the images with the library's DDPMScheduler (x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps)
and minimises the MSE between eps and the model's prediction given x_t, t and the image's CLS
token. Every random draw is a function of (seed, epoch) or (seed, step), so a run killed at any
point and resumed from its last checkpoint takes exactly the steps an uninterrupted run takes.

A checkpoint (weights, optimiser, step, history, loss curve) is written every
``checkpoint_every`` steps and at the end of every epoch, where the validation loss (the same
timesteps and noise for every evaluation) is also recorded.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from saerad.counterfactual import checkpoint as ck
from saerad.counterfactual.config import DiffusionConfig
from saerad.counterfactual.data import SplitData, subject_split, to_model
from saerad.counterfactual.model import TokenConditionedUNet

log = logging.getLogger(__name__)

# Settings a run may be resumed with changed: how long it runs, how often it checkpoints.
RESUMABLE = ("epochs", "checkpoint_every")

Progress = Callable[[int, int, dict[str, Any]], None]  # (step, total steps, last record)


def make_scheduler(cfg: DiffusionConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type="epsilon", clip_sample=True)


def _generator(*key: int) -> torch.Generator:
    # One seed per (purpose, seed, step) tuple, from numpy's SeedSequence hashing.
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


class DiffusionTrainer:
    def __init__(self, cfg: DiffusionConfig, data: SplitData, out_dir: Path, encoder: dict[str, Any],
                 device: str = "cpu"):
        self.cfg, self.data, self.out, self.device = cfg, data, Path(out_dir), device
        self.train_idx, self.val_idx = subject_split(data.samples, cfg.val_fraction, cfg.seed)
        if len(self.train_idx) < cfg.batch_size:
            raise BenchError(f"{len(self.train_idx)} training images after the {cfg.val_fraction:.0%} validation "
                             f"split is smaller than one batch of {cfg.batch_size}; lower --batch-size")
        self.meta = {"config": cfg.to_dict(), "encoder": encoder,
                     "data": {"fingerprint": data.fingerprint, "n_train": int(len(self.train_idx)),
                              "n_val": int(len(self.val_idx))}}
        self.steps_per_epoch = len(self.train_idx) // cfg.batch_size  # the last partial batch is dropped
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.images = to_model(data.pixels)
        self.tokens = torch.from_numpy(data.tokens)
        self.scheduler = make_scheduler(cfg)
        torch.manual_seed(cfg.seed)
        self.model = TokenConditionedUNet(cfg, data.tokens.shape[1])
        self.model.set_token_stats(self.tokens[torch.from_numpy(self.train_idx)])
        self.model.to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.history: dict[str, list] = {"train": [], "val": []}

    # -- resume ---------------------------------------------------------------------------
    def _resume(self) -> None:
        state = ck.load_train_state(self.out)
        if state is None:
            if (self.out / ck.CONFIG_FILE).exists():
                raise BenchError(f"{self.out} holds a diffusion model without its training state; "
                                 "choose a new --out directory")
            return
        old = ck.read_meta(self.out)
        for key in ("config", "encoder", "data"):
            was, now = old.get(key), self.meta[key]
            if key == "config":  # more (or fewer) epochs continue the same run
                was, now = ({k: v for k, v in c.items() if k not in RESUMABLE} for c in (was or {}, now))
            if was != now:
                diff = _first_difference(was, now)
                raise BenchError(f"{self.out} holds a training run with another {key} ({diff}); resume it with the "
                                 "same settings or choose a new --out directory")
        # The training state holds its own copy of the weights, written in the same atomic file as
        # the optimiser and step: a kill between writing model.safetensors and train_state.pt
        # leaves the published weights one checkpoint ahead, never a mismatched pair to resume from.
        self.model.load_state_dict(state["model"])
        self.model.train()
        self.opt.load_state_dict(state["optimizer"])
        self.step, self.history = int(state["step"]), state["history"]
        log.info("resuming the training in %s from step %d of %d", self.out, self.step, self.total_steps)

    def _checkpoint(self) -> None:
        epoch = self.step / self.steps_per_epoch
        ck.save_model(self.model, self.out, {**self.meta, "epoch": round(epoch, 4)}, self.step)
        ck.save_train_state(self.out, {"step": self.step, "optimizer": self.opt.state_dict(),
                                       "history": self.history, "model": self.model.state_dict()})
        ck.save_history(self.out, self.history)
        plot_losses(self.history, self.out / ck.LOSS_PLOT)

    # -- training -------------------------------------------------------------------------
    def _loss(self, x0: torch.Tensor, tokens: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        t = torch.randint(0, self.cfg.num_train_timesteps, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        x_t = self.scheduler.add_noise(x0, noise, t)
        pred = self.model(x_t.to(self.device), t.to(self.device), tokens.to(self.device))
        return F.mse_loss(pred, noise.to(self.device))

    @torch.no_grad()
    def validation_loss(self) -> float:
        self.model.eval()
        g = _generator(self.cfg.seed, 2)  # the same draws at every evaluation
        total, n = 0.0, 0
        for start in range(0, len(self.val_idx), 64):
            idx = torch.from_numpy(self.val_idx[start:start + 64])
            loss = self._loss(self.images[idx], self.tokens[idx], g)
            total, n = total + float(loss) * len(idx), n + len(idx)
        self.model.train()
        return total / max(n, 1)

    def train(self, progress: Progress | None = None, max_steps: int | None = None) -> TokenConditionedUNet:
        """Train to the configured number of epochs (or stop after `max_steps` more steps)."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._resume()
        self.model.train()
        cfg, spe = self.cfg, self.steps_per_epoch
        stop = self.total_steps if max_steps is None else min(self.total_steps, self.step + max_steps)
        t0, first = time.perf_counter(), self.step
        while self.step < stop:
            epoch, k = divmod(self.step, spe)
            order = np.random.default_rng([cfg.seed, 1, epoch]).permutation(self.train_idx)
            idx = torch.from_numpy(order[k * cfg.batch_size:(k + 1) * cfg.batch_size])
            loss = self._loss(self.images[idx], self.tokens[idx], _generator(cfg.seed, 3, self.step))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise BenchError(f"the training loss became {value} at step {self.step}; lower --lr")
            elapsed = time.perf_counter() - t0
            rec: dict[str, Any] = {"step": self.step, "epoch": self.step / spe, "loss": value,
                                   "images_per_s": (self.step - first) * cfg.batch_size / max(elapsed, 1e-9)}
            self.history["train"].append({"step": self.step, "loss": value})
            end_of_epoch = self.step % spe == 0
            if end_of_epoch:
                rec["val_loss"] = self.validation_loss()
                self.history["val"].append({"step": self.step, "epoch": self.step // spe, "loss": rec["val_loss"]})
                log.info("epoch %d/%d: train loss %.4f (last step), validation loss %.4f, %.1f images/s",
                         self.step // spe, cfg.epochs, value, rec["val_loss"], rec["images_per_s"])
            if end_of_epoch or self.step % cfg.checkpoint_every == 0 or self.step == stop:
                self._checkpoint()
            if progress is not None:
                progress(self.step, self.total_steps, rec)
        if self.step == first:  # nothing to do: the run was complete
            log.info("%s is already trained (%d steps)", self.out, self.step)
        self.model.eval()
        return self.model


def _first_difference(old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                return f"{k}: {old.get(k)!r} there, {new.get(k)!r} now"
    return f"{old!r} there, {new!r} now"


def plot_losses(history: dict[str, list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    tr = history.get("train", [])
    if tr:
        steps = np.array([r["step"] for r in tr])
        loss = np.array([r["loss"] for r in tr])
        w = max(1, len(loss) // 50)  # a running mean, so the curve is readable over the batch noise
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(steps, loss, color="0.8", lw=0.6, label="train (per step)")
        ax.plot(steps[w - 1:], smooth, color="C0", lw=1.5, label=f"train (mean of {w})")
    va = history.get("val", [])
    if va:
        ax.plot([r["step"] for r in va], [r["loss"] for r in va], "o-", color="C1", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("noise MSE")
    ax.set_yscale("log")
    ax.legend(frameon=False)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
