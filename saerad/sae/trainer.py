"""Train an SAE on CLS tokens with the SAE-Rad recipe (paper App. B.3; docs/method.md).

Defaults (``TrainConfig()``): Adam(0.9, 0.999), no weight decay; learning rate warmed up
linearly over the first 1% of steps to 5e-5 and decayed linearly to 0 over the last 20%;
lambda warmed up linearly over the first 5% of steps to 8e-3; 200,000 steps of 2048 tokens;
expansion 64. Every value can be overridden.

A run writes a checkpoint directory (see checkpoint.py) every ``checkpoint_every`` steps and
at the end; ``Trainer(..., resume=True)`` continues from it. Because batch b of the token
stream depends only on (seed, b) and the optimiser state, step and RNG state are restored,
a resumed run on CPU is bit-for-bit the run that was never interrupted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import Tensor

from saerad.sae.base import SparseAutoencoder, create_sae, get_architecture
from saerad.sae.checkpoint import (load_metrics, load_sae, load_train_state, read_config, save_metrics,
                                   save_sae, save_train_state, weights_step)
from saerad.sae.errors import SAEDataError, SAEError
from saerad.sae.metrics import FiringWindow, explained_variance
from saerad.sae.scaling import estimate_scale
from saerad.sae.target_l0 import L0Calibration, find_l1_for_target_l0, l0_sample, mean_l0
from saerad.sae.tokens import TokenSource, iter_token_batches, iter_token_chunks, load_token_array

log = logging.getLogger(__name__)

# A factory start_batch -> iterator lets any batch stream take part in exact resume.
BatchFactory = Callable[[int], Iterable[Tensor]]
StepFn = Callable[[Tensor, float], dict[str, Tensor]]


@dataclass
class TrainConfig:
    """The paper's recipe by default; see the module docstring."""

    arch: str = "hybrid-gated"
    expansion: int = 64
    d_sae: int | None = None  # overrides expansion when set
    sae_options: dict[str, Any] = field(default_factory=dict)  # architecture extras, e.g. {"k": 32}
    steps: int = 200_000
    batch_size: int = 2048
    lr: float = 5e-5
    lr_warmup_frac: float = 0.01
    lr_decay_frac: float = 0.2
    l1_coeff: float = 8e-3
    l1_warmup_frac: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    seed: int = 0
    fast: bool = True  # use saerad.sae.fast for hybrid-gated when it is installed
    log_every: int = 100
    checkpoint_every: int = 10_000
    activity_every: int = 10  # observe which features fire every this many steps
    dead_window_steps: int = 10_000  # "dead over the training window" looks this far back
    device: str = "cpu"
    # Target sparsity instead of a fixed lambda (saerad.sae.target_l0): when set, a short
    # calibration picks l1_coeff so that mean L0 on the training tokens is near target_l0;
    # l1_coeff is then only the search's starting point.
    target_l0: float | None = None
    target_l0_tolerance: float = 0.15  # relative: |L0 - target| <= tolerance * target
    target_l0_trials: int = 12  # budget of calibration trials
    # Steps per trial; None runs the whole recipe, which is what makes the final L0 match the
    # trial's. Shorter trials are cheaper but overestimate the final L0 (docs/sae.md).
    target_l0_steps: int | None = None
    target_l0_eval_tokens: int = 8192  # training tokens L0 is measured on

    def __post_init__(self) -> None:
        get_architecture(self.arch)  # UnknownArchitectureError early, listing the choices
        positive = ("steps", "batch_size", "log_every", "checkpoint_every", "activity_every",
                    "dead_window_steps", "target_l0_trials", "target_l0_eval_tokens")
        for name in positive:
            if getattr(self, name) <= 0:
                raise SAEError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("lr_warmup_frac", "lr_decay_frac", "l1_warmup_frac"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SAEError(f"TrainConfig.{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.lr < 0 or self.l1_coeff < 0 or self.weight_decay < 0:
            raise SAEError("TrainConfig lr, l1_coeff and weight_decay must be non-negative")
        if self.target_l0 is not None and not self.target_l0 > 0:
            raise SAEError(f"TrainConfig.target_l0 must be positive, got {self.target_l0}")
        if self.target_l0_steps is not None and self.target_l0_steps <= 0:
            raise SAEError(f"TrainConfig.target_l0_steps must be positive, got {self.target_l0_steps}")
        if not self.target_l0_tolerance > 0:
            raise SAEError(f"TrainConfig.target_l0_tolerance must be positive, got {self.target_l0_tolerance}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SAEError(f"unknown training option(s) {unknown}; valid options: {sorted(known)}")
        return cls(**values)


def _ramp_steps(frac: float, steps: int) -> int:
    return max(1, round(frac * steps)) if frac > 0 else 0


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate at 0-based ``step``: linear warm-up to ``lr``, flat, linear decay to 0."""
    factor = 1.0
    warmup = _ramp_steps(config.lr_warmup_frac, config.steps)
    if step < warmup:
        factor = (step + 1) / warmup
    decay = _ramp_steps(config.lr_decay_frac, config.steps)
    if decay and step >= config.steps - decay:
        factor = min(factor, (config.steps - step) / decay)
    return config.lr * factor


def l1_at(step: int, config: TrainConfig) -> float:
    """Sparsity coefficient lambda at 0-based ``step``: linear warm-up, then constant."""
    warmup = _ramp_steps(config.l1_warmup_frac, config.steps)
    if step < warmup:
        return config.l1_coeff * (step + 1) / warmup
    return config.l1_coeff


def resolve_step_fn(sae: SparseAutoencoder, fast: bool) -> tuple[StepFn, str]:
    """The loss function the trainer differentiates, and its name for the logs.

    hybrid-gated with ``fast`` uses saerad.sae.fast.hybrid_gated_step_loss when that module
    exists (same losses and gradients, less memory and time); everything else uses the
    architecture's reference ``forward_losses``.
    """
    from saerad.sae.hybrid_gated import HybridGatedSAE

    # A subclass that redefines the loss (an ablation, say) must not be given the fast step,
    # which computes the unmodified SAE-Rad loss.
    if fast and isinstance(sae, HybridGatedSAE) and type(sae).forward_losses is HybridGatedSAE.forward_losses:
        try:
            from saerad.sae.fast import hybrid_gated_step_loss
        except ImportError as e:
            log.warning("fast SAE step unavailable (%s); using the reference forward_losses", e)
        else:
            return partial(hybrid_gated_step_loss, sae), "saerad.sae.fast.hybrid_gated_step_loss"
    return sae.forward_losses, f"{type(sae).__name__}.forward_losses"


class Trainer:
    """One training run, optionally tied to a checkpoint directory.

    ``tokens`` is a token source (array, tensor, .npy or .safetensors file), or a factory
    ``start_batch -> iterable of raw token batches``; a plain iterable is also accepted but
    then the caller must position it correctly when resuming.

    ``scale`` skips estimating the scaling constant; ``sae`` trains a model built by the
    caller (a custom initialisation or an ablated variant) instead of a fresh one from
    ``config``; a resumed run always loads the model from the checkpoint.

    With ``config.target_l0`` set, a fresh run first calibrates lambda
    (saerad.sae.target_l0.find_l1_for_target_l0); ``self.config`` then carries the lambda
    found, ``self.calibration`` the search, and both are saved with the checkpoint. A resumed
    run keeps the saved lambda instead of searching again.
    """

    def __init__(
        self,
        config: TrainConfig,
        tokens: TokenSource | BatchFactory | Iterable[Tensor],
        out_dir: str | Path | None = None,
        *,
        resume: bool = False,
        scale: float | None = None,
        sae: SparseAutoencoder | None = None,
    ):
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._tokens = tokens
        if self._is_source():
            # Load (or memory-map) once; scale estimation and batching both read it.
            self._tokens = load_token_array(tokens)  # type: ignore[arg-type]
        self.device = torch.device(config.device)
        self.history: list[dict[str, Any]] = []
        self.calibration: L0Calibration | None = None
        self.step = 0
        state = None
        if resume:
            if self.out_dir is None:
                raise SAEError("resume needs the checkpoint directory (out_dir)")
            state = load_train_state(self.out_dir)
        if state is not None:
            self._restore(state)
        else:
            self._fresh(scale, sae)
        self.step_fn, self.step_fn_name = resolve_step_fn(self.sae, config.fast)
        log.info("training %s with %s from step %d", self.sae, self.step_fn_name, self.step)

    # --- setup -------------------------------------------------------------------------------
    def _is_source(self) -> bool:
        from numpy import ndarray

        return isinstance(self._tokens, (str, Path, ndarray, Tensor))

    def _d_in(self) -> int:
        if self._is_source():
            return int(load_token_array(self._tokens).shape[1])  # type: ignore[arg-type]
        first = next(iter(self._batches(0)))
        return int(first.shape[1])

    def _fresh(self, scale: float | None, sae: SparseAutoencoder | None) -> None:
        cfg = self.config
        if sae is None:
            sae_config = get_architecture(cfg.arch).config_class.from_dict(
                {"d_in": self._d_in(), "expansion": cfg.expansion, "d_sae": cfg.d_sae, **cfg.sae_options}
            )
            sae = create_sae(cfg.arch, sae_config, seed=cfg.seed)
        elif sae.d_in != self._d_in():
            raise SAEError(f"the given SAE takes {sae.d_in}-d inputs but the tokens are {self._d_in()}-d")
        elif cfg.target_l0 is not None:
            raise SAEError("target_l0 calibrates fresh SAEs built from the config; "
                           "pass either a ready-made sae or target_l0, not both")
        self.sae = sae
        if scale is None:
            if not self._is_source():
                raise SAEError(
                    "the scaling constant is estimated on a token source (array or file); "
                    "with a batch iterator pass scale=estimate_scale(<one pass over the tokens>)"
                )
            scale = estimate_scale(iter_token_chunks(self._tokens))  # type: ignore[arg-type]
        if cfg.target_l0 is not None:
            if not self._is_source():
                raise SAEError("target_l0 needs a token source (array or file): every "
                               "calibration trial replays the same batches")
            self.calibration = find_l1_for_target_l0(cfg, self._tokens, scale=scale)  # type: ignore[arg-type]
            self.config = cfg = replace(cfg, l1_coeff=self.calibration.l1_coeff)
        self.sae.set_scale(scale)
        log.info("data scaling constant c = %.6g", scale)
        self.sae.to(self.device)
        self.optimizer = self._make_optimizer()
        self.window = FiringWindow(self.sae.d_sae, cfg.dead_window_steps)
        self.torch_rng = torch.get_rng_state()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        # The fused kernel updates all of W_gate and W_dec in one pass: on CPU it cuts the
        # optimizer step ~6x (0.38 s -> 0.06 s at m = 49,152), more than the whole sparse
        # backward pass costs (docs/sae-benchmark.md). Same update rule as the plain loop.
        return torch.optim.Adam(
            self.sae.parameters(), lr=lr_at(0, cfg), betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_eps, weight_decay=cfg.weight_decay, fused=True,
        )

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.out_dir is not None
        saved = read_config(self.out_dir)["train_config"] or {}
        if self.config.target_l0 is not None and saved.get("target_l0") == self.config.target_l0:
            # The saved lambda is the one the calibration found; searching again could
            # land elsewhere and would change the run.
            self.config = replace(self.config, l1_coeff=saved.get("l1_coeff", self.config.l1_coeff))
            recorded = load_metrics(self.out_dir).get("target_l0")
            if recorded:
                self.calibration = L0Calibration(**recorded)
        mine = self.config.to_dict()
        # Schedules and data order depend on these; a mismatch would silently change the run.
        binding = ("arch", "expansion", "d_sae", "sae_options", "steps", "batch_size", "lr",
                   "lr_warmup_frac", "lr_decay_frac", "l1_coeff", "l1_warmup_frac", "adam_beta1",
                   "adam_beta2", "adam_eps", "weight_decay", "seed", "target_l0")
        diff = {k: (saved.get(k), mine[k]) for k in binding if saved.get(k) != mine[k]}
        if diff:
            raise SAEError(
                f"cannot resume {self.out_dir}: the training config differs from the saved one "
                f"(saved, given): {diff}; resume with the saved config or use a new --out"
            )
        if weights_step(self.out_dir) != int(state["step"]):
            raise SAEDataError(
                f"{self.out_dir}: sae.safetensors is from step {weights_step(self.out_dir)} but "
                f"train_state.pt from step {state['step']} (interrupted while saving?); "
                "delete train_state.pt to start over"
            )
        self.sae = load_sae(self.out_dir, self.device)
        if self._is_source() and self.sae.d_in != self._d_in():
            raise SAEDataError(f"cannot resume {self.out_dir}: its SAE takes {self.sae.d_in}-d inputs "
                               f"but the tokens are {self._d_in()}-d")
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.window = FiringWindow(self.sae.d_sae, self.config.dead_window_steps)
        self.window.load_state_dict(state["firing_window"])
        self.history = list(state["history"])
        self.torch_rng = state["torch_rng"]
        torch.set_rng_state(self.torch_rng)
        log.info("resumed %s at step %d", self.out_dir, self.step)

    def _batches(self, start_batch: int) -> Iterator[Tensor]:
        tokens = self._tokens
        if self._is_source():
            return iter_token_batches(tokens, self.config.batch_size, self.config.seed,  # type: ignore[arg-type]
                                      start_batch=start_batch)
        if callable(tokens):
            return iter(tokens(start_batch))
        return iter(tokens)  # type: ignore[arg-type]

    # --- the loop ------------------------------------------------------------------------------
    def train(
        self,
        until_step: int | None = None,
        on_step: Callable[[int, dict[str, Any] | None], None] | None = None,
    ) -> SparseAutoencoder:
        """Run to ``config.steps`` (or stop after ``until_step`` steps, for tests and budgets).

        ``on_step(step, record)`` is called after every step, with the logged record on
        logging steps and None otherwise (the CLI's progress bar).
        """
        cfg = self.config
        end = cfg.steps if until_step is None else min(until_step, cfg.steps)
        self.sae.train()
        sums: dict[str, Tensor] = {}
        n_summed = 0
        t0 = time.perf_counter()
        batches = self._batches(self.step)
        while self.step < end:
            try:
                z = next(batches)
            except StopIteration:
                raise SAEDataError(f"the token stream ended at step {self.step} of {end}") from None
            step = self.step
            x = z.to(self.device, torch.float32) * self.sae.scale
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            l1 = l1_at(step, cfg)
            losses = self.step_fn(x, l1)
            self.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            self.sae.constrain_gradients()
            self.optimizer.step()
            self.sae.constrain_weights()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
            n_summed += 1
            self.step = step + 1

            is_log = self.step % cfg.log_every == 0 or self.step == cfg.steps
            record = None
            if is_log or step % cfg.activity_every == 0:
                with torch.no_grad():
                    h = self.sae.encode_scaled(x)
                self.window.observe(step, h)
                if is_log:
                    record = self._record(step, x, h, sums, n_summed, l1, time.perf_counter() - t0)
                    self.history.append(record)
                    sums, n_summed = {}, 0
                    log.info("step %d: %s", self.step, _fmt(record))
            if self.step == cfg.steps and self.calibration is not None:
                self._measure_final_l0()
            if self.out_dir is not None and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps):
                self.save()
            if on_step is not None:
                on_step(self.step, record)
        return self.sae

    def _measure_final_l0(self) -> None:
        """L0 of the trained SAE on the calibration's token sample, so that it compares like
        with like with the trials; a warning when it drifted outside the tolerance."""
        cal = self.calibration
        assert cal is not None and self._is_source()
        sample = l0_sample(self._tokens, cal.eval_tokens, self.config.seed)  # type: ignore[arg-type]
        cal.final_l0 = mean_l0(self.sae, sample)
        log.info("target L0 %g: final L0 %.4g at lambda %.4g", cal.target, cal.final_l0, cal.l1_coeff)
        if abs(cal.final_l0 - cal.target) > cal.tolerance * cal.target:
            log.warning("final L0 %.4g is outside %g%% of the target %g: the calibration trials "
                        "ran %d of the run's %d steps; raise target_l0_steps",
                        cal.final_l0, 100 * cal.tolerance, cal.target, cal.trial_steps,
                        self.config.steps)

    @torch.no_grad()
    def _record(self, step: int, x: Tensor, h: Tensor, sums: dict[str, Tensor], n: int,
                l1: float, elapsed: float) -> dict[str, Any]:
        x_hat = self.sae.decode(h)
        record: dict[str, Any] = {"step": step + 1, "lr": lr_at(step, self.config), "l1_coeff": l1}
        record.update({k: float(v) / n for k, v in sums.items()})
        record["l0"] = float((h > 0).sum(dim=-1).float().mean())
        record["explained_variance"] = explained_variance(x, x_hat)
        record["dead_in_window"] = self.window.dead_count(step)
        record["tokens_seen"] = (step + 1) * self.config.batch_size
        record["elapsed_s"] = elapsed
        return record

    def save(self) -> None:
        """Write the checkpoint directory (weights, config, metrics, resume state)."""
        if self.out_dir is None:
            raise SAEError("this trainer has no output directory to save to")
        save_sae(self.sae, self.out_dir, step=self.step, train_config=self.config.to_dict())
        metrics: dict[str, Any] = {"history": self.history}
        if self.calibration is not None:
            metrics["target_l0"] = self.calibration.to_dict()
        save_train_state(self.out_dir, {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "firing_window": self.window.state_dict(),
            "history": self.history,
        })
        save_metrics(self.out_dir, metrics)


def _fmt(record: dict[str, Any]) -> str:
    keys = ("loss", "recon", "sparsity", "aux", "l0", "explained_variance", "lr")
    return " ".join(f"{k}={record[k]:.4g}" for k in keys if isinstance(record.get(k), float))


def train_sae(
    tokens: TokenSource | BatchFactory,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
) -> SparseAutoencoder:
    """Train (or resume) an SAE and return it; the checkpoint is in ``out_dir`` if given."""
    trainer = Trainer(config or TrainConfig(), tokens, out_dir, resume=resume)
    return trainer.train()


__all__ = ["TrainConfig", "Trainer", "find_l1_for_target_l0", "lr_at", "l1_at", "resolve_step_fn",
           "train_sae", "iter_token_batches"]
