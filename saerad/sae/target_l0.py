"""Find the sparsity coefficient lambda that gives a target mean L0 (docs/sae.md, Target L0).

The same lambda means very different sparsity on different encoders (token geometry, width,
number of features), so comparing SAEs across encoders at one lambda compares unlike things.
A target L0 (mean number of active features per token) means the same everywhere.

Method: a calibration before training. Each trial trains a fresh SAE (same seed, same data
order) with the run's recipe, or the recipe compressed to ``target_l0_steps`` steps (same
warm-up and decay fractions), at one lambda, and measures the mean L0 on a fixed sample of the training tokens.
The search works in log-lambda:

1. start at ``config.l1_coeff``;
2. while every trial is on the same side of the target, step by the ratio L0 / target
   (i.e. assuming L0 ~ 1/lambda), clamped to a factor in [2, 100] so that one noisy trial
   cannot send the search out of range;
3. once the target is bracketed, interpolate linearly in (log lambda, log L0) between the
   tightest bracket, clamped to the inner 70% of the bracket so every trial shrinks it
   (a safeguarded regula falsi; plain bisection when one end has L0 = 0).

It stops at the first trial within ``target_l0_tolerance`` (relative) of the target, or fails
with ``TargetL0Error`` (closest L0 and its lambda) after ``target_l0_trials`` trials. L0
falls monotonically with lambda in practice; where short-run noise breaks that (a trial at a
larger lambda denser than one at a smaller lambda) it is logged, recorded as
``monotone: false``, and the bracket is taken from the tightest consistent pair.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from saerad.sae.base import SparseAutoencoder
from saerad.sae.errors import SAEError, TargetL0Error
from saerad.sae.scaling import estimate_scale
from saerad.sae.tokens import TokenSource, iter_token_chunks, load_token_array

if TYPE_CHECKING:
    from saerad.sae.trainer import TrainConfig

log = logging.getLogger(__name__)

# Bounds on one bracketing step: below 2x the search crawls, above 100x one noisy short
# trial can throw it decades away.
_MIN_FACTOR, _MAX_FACTOR = 2.0, 100.0
# Interpolated proposals stay in the inner part of the bracket so that each trial shrinks it
# even when the log-log line is a poor model.
_INNER = 0.15
_DEFAULT_START = 1e-3  # when config.l1_coeff is 0 there is no scale to start from


@dataclass
class L0Calibration:
    """The outcome of ``find_l1_for_target_l0``; ``to_dict`` is what checkpoints record."""

    target: float
    tolerance: float
    l1_coeff: float  # the lambda chosen
    l0: float  # its L0 in calibration
    trials: list[dict[str, float]]  # [{"l1_coeff", "l0"}] in the order run
    trial_steps: int
    eval_tokens: int
    seconds: float
    monotone: bool
    final_l0: float | None = None  # filled in after the real run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def l0_sample(tokens: np.ndarray, n: int, seed: int) -> Tensor:
    """A fixed random sample of ``n`` training tokens (all when fewer) to measure L0 on.

    Sorted indices keep reads from a memory-mapped file sequential.
    """
    total = tokens.shape[0]
    if n >= total:
        return torch.from_numpy(np.array(tokens, dtype=np.float32))
    idx = np.sort(np.random.default_rng([seed, 104729]).choice(total, size=n, replace=False))
    return torch.from_numpy(np.array(tokens[idx], dtype=np.float32))


@torch.no_grad()
def mean_l0(sae: SparseAutoencoder, tokens: Tensor, chunk: int = 8192) -> float:
    """Mean number of features with h_i > 0 over raw (unscaled) ``tokens``."""
    was_training = sae.training
    sae.eval()
    device = sae.W_dec.device
    active = 0.0
    try:
        for i in range(0, tokens.shape[0], chunk):
            h = sae.encode(tokens[i : i + chunk].to(device, torch.float32))
            active += float((h > 0).sum())
    finally:
        sae.train(was_training)
    return active / max(1, tokens.shape[0])


def check_target(config: "TrainConfig", d_sae: int) -> None:
    """Errors that need no trial: a target outside (0, d_sae) or an architecture without lambda."""
    target = config.target_l0
    if target is None:
        raise SAEError("find_l1_for_target_l0 needs TrainConfig.target_l0")
    if config.arch == "topk":
        raise SAEError("the topk SAE ignores lambda: its L0 is set by k (--sae-option k=N), "
                       "not by --target-l0")
    if not 0 < target < d_sae:
        raise TargetL0Error(
            f"target L0 {target:g} cannot be reached: it must lie strictly between 0 and the "
            f"number of features ({d_sae})", target)


def _log_l0(l0: float) -> float:
    return math.log(max(l0, 1e-12))


def _propose(trials: list[dict[str, float]], target: float) -> float:
    """The next lambda to try, given the trials so far (see the module docstring)."""
    dense = [t for t in trials if t["l0"] > target]  # lambda too small
    sparse = [t for t in trials if t["l0"] <= target]  # lambda too large
    if not sparse:
        lo = max(dense, key=lambda t: t["l1_coeff"])
        factor = min(max(lo["l0"] / target, _MIN_FACTOR), _MAX_FACTOR)
        return lo["l1_coeff"] * factor
    if not dense:
        hi = min(sparse, key=lambda t: t["l1_coeff"])
        ratio = target / hi["l0"] if hi["l0"] > 0 else _MAX_FACTOR
        return hi["l1_coeff"] / min(max(ratio, _MIN_FACTOR), _MAX_FACTOR)
    lo = max(dense, key=lambda t: t["l1_coeff"])
    hi = min(sparse, key=lambda t: t["l1_coeff"])
    if lo["l1_coeff"] >= hi["l1_coeff"]:
        # Noise inverted the bracket: L0 is flat within noise here; the geometric mean of the
        # two is as good a guess as any, and later trials refine it.
        return math.sqrt(lo["l1_coeff"] * hi["l1_coeff"])
    a, b = math.log(lo["l1_coeff"]), math.log(hi["l1_coeff"])
    if hi["l0"] <= 0:
        t = 0.5
    else:
        fa, fb = _log_l0(lo["l0"]), _log_l0(hi["l0"])
        t = (fa - math.log(target)) / (fa - fb) if fa != fb else 0.5
        t = min(max(t, _INNER), 1.0 - _INNER)
    return math.exp(a + t * (b - a))


def _is_monotone(trials: list[dict[str, float]]) -> bool:
    ordered = sorted(trials, key=lambda t: t["l1_coeff"])
    return all(x["l0"] >= y["l0"] for x, y in zip(ordered, ordered[1:]))


def find_l1_for_target_l0(
    config: "TrainConfig",
    tokens: TokenSource,
    *,
    scale: float | None = None,
) -> L0Calibration:
    """Search lambda so that an SAE trained with ``config``'s recipe has mean L0 near
    ``config.target_l0``; see the module docstring. ``tokens`` must be a token source (array,
    tensor or file), since each trial replays the same batches.

    Raises TargetL0Error (with the closest L0 and its lambda) when no trial within the budget
    lands within the tolerance, and before any trial for a target outside (0, d_sae).
    """
    from saerad.sae.base import get_architecture
    from saerad.sae.trainer import Trainer

    t0 = time.perf_counter()
    arr = load_token_array(tokens)
    sae_config = get_architecture(config.arch).config_class.from_dict(
        {"d_in": int(arr.shape[1]), "expansion": config.expansion, "d_sae": config.d_sae,
         **config.sae_options})
    check_target(config, int(sae_config.d_sae))
    target = float(config.target_l0)  # type: ignore[arg-type]
    if scale is None:
        scale = estimate_scale(iter_token_chunks(arr))
    sample = l0_sample(arr, config.target_l0_eval_tokens, config.seed)
    trial_steps = min(config.steps, config.target_l0_steps or config.steps)
    # The compressed recipe: same fractions, fewer steps; no checkpoints, one log record.
    trial_cfg = replace(config, target_l0=None, steps=trial_steps, log_every=trial_steps,
                        checkpoint_every=trial_steps, dead_window_steps=trial_steps)
    trials: list[dict[str, float]] = []
    lam = config.l1_coeff if config.l1_coeff > 0 else _DEFAULT_START
    best: dict[str, float] | None = None
    for i in range(config.target_l0_trials):
        trainer = Trainer(replace(trial_cfg, l1_coeff=lam), arr, scale=scale)
        l0 = mean_l0(trainer.train(), sample)
        trials.append({"l1_coeff": lam, "l0": l0})
        log.info("target L0 %g: trial %d lambda=%.4g L0=%.4g", target, i + 1, lam, l0)
        if abs(l0 - target) <= config.target_l0_tolerance * target:
            best = trials[-1]
            break
        if i + 1 < config.target_l0_trials:
            lam = _propose(trials, target)
    monotone = _is_monotone(trials)
    if not monotone:
        log.warning("L0 was not monotone in lambda over the trials %s (short-run noise)", trials)
    if best is None:
        closest = min(trials, key=lambda t: abs(_log_l0(t["l0"]) - math.log(target)))
        raise TargetL0Error(
            f"target L0 {target:g} was not reached within {len(trials)} trials "
            f"(tolerance {100 * config.target_l0_tolerance:g}%): the closest was L0 "
            f"{closest['l0']:.4g} at lambda (l1_coeff) {closest['l1_coeff']:.4g}; "
            f"trials (lambda, L0): {[(round(t['l1_coeff'], 6), round(t['l0'], 4)) for t in trials]}. "
            "Raise target_l0_trials, widen target_l0_tolerance, or pick a reachable target",
            target, closest["l0"], closest["l1_coeff"], trials)
    seconds = time.perf_counter() - t0
    log.info("target L0 %g: lambda=%.4g (L0 %.4g) after %d trials of %d steps, %.1f s",
             target, best["l1_coeff"], best["l0"], len(trials), trial_steps, seconds)
    return L0Calibration(target=target, tolerance=config.target_l0_tolerance,
                         l1_coeff=best["l1_coeff"], l0=best["l0"], trials=trials,
                         trial_steps=trial_steps, eval_tokens=int(sample.shape[0]),
                         seconds=seconds, monotone=monotone)


__all__ = ["L0Calibration", "TargetL0Error", "find_l1_for_target_l0", "l0_sample", "mean_l0"]
