"""``bench sae bench``: time one hybrid-gated SAE training step against its hardware floor.

Three things are timed in the same process, on the same data and parameter values:

- ours: ``saerad.sae.fast.hybrid_gated_step_loss`` + backward + fused Adam step;
- the dense reference: a straightforward autograd implementation of the same loss as
  SAELens writes it (two encoder products, two dense decodes) + backward + torch's default
  Adam step;
- the floor: one dense encoder product x @ W_gate.T of the same shape (B x n x m), which any
  implementation must compute.

Each is run once to warm up, then ``repeats`` times; the medians are reported. To put the
gate at a chosen L0 with random weights, inputs are standard normal and the rows of W_gate
unit vectors, so every gate pre-activation (before bias) is N(0, 1); b_gate = -z with
z the (1 - l0/m) normal quantile makes each feature fire with probability l0/m. The
measured L0 is reported.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn

from saerad.sae.errors import SAEError
from saerad.sae.fast import hybrid_gated_step_loss
from saerad.sae.hybrid_gated import HybridGatedConfig, HybridGatedSAE

log = logging.getLogger(__name__)

PARAM_NAMES = ("W_gate", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec")


def dense_reference_losses(p: dict[str, Tensor], x: Tensor, l1_coeff: float) -> dict[str, Tensor]:
    """The hybrid-gated loss written plainly, as SAELens does: W_mag is formed explicitly and
    each of the two pre-activations and the two reconstructions is its own dense product."""
    pi_gate = x @ p["W_gate"].T + p["b_gate"]
    w_mag = torch.exp(p["r_mag"])[:, None] * p["W_gate"]
    pi_mag = x @ w_mag.T + p["b_mag"]
    h = (pi_gate > 0).to(x.dtype) * torch.relu(pi_mag)
    ra = torch.relu(pi_gate)
    x_hat = h @ p["W_dec"].T + p["b_dec"]
    x_hat_aux = ra @ p["W_dec"].T + p["b_dec"]
    recon = (x - x_hat).pow(2).sum(-1).mean()
    aux = (x - x_hat_aux).pow(2).sum(-1).mean()
    sparsity = l1_coeff * (ra * p["W_dec"].norm(dim=0)).sum(-1).mean()
    return {"loss": recon + sparsity + aux, "recon": recon, "sparsity": sparsity, "aux": aux}


def make_benchmark_sae(d_in: int, expansion: int, l0: float, device: torch.device,
                       seed: int = 0) -> HybridGatedSAE:
    """A hybrid-gated SAE at the paper's initialisation with b_gate set for the given L0."""
    m = d_in * expansion
    if not 0 < l0 < m:
        raise SAEError(f"l0 must lie strictly between 0 and d_sae = {m}, got {l0}")
    sae = HybridGatedSAE(HybridGatedConfig(d_in=d_in, expansion=expansion),
                         generator=torch.Generator().manual_seed(seed))
    z = torch.special.ndtri(torch.tensor(1.0 - l0 / m, dtype=torch.float64)).item()
    with torch.no_grad():
        sae.b_gate.fill_(-z)
    return sae.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up: allocator, optimizer state, lazy initialisation
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _adam(params: list[nn.Parameter], fused: bool) -> torch.optim.Adam:
    # lr is tiny so the gate (and L0) barely moves across repeats; the work is the same.
    return torch.optim.Adam(params, lr=1e-7, betas=(0.9, 0.999), fused=fused or None)


def run_benchmark(batch: int = 2048, d_in: int = 768, expansion: int = 64, l0: float = 15.0,
                  repeats: int = 3, device: str | torch.device = "cpu",
                  dtype: torch.dtype | str = torch.float32, l1_coeff: float = 8e-3,
                  seed: int = 0, details: bool = False) -> dict[str, float | int | str]:
    """Median seconds per full training step of ours and of the dense reference, and of the
    floor (one dense encoder product), measured in this run.

    Returns {"ours_s", "dense_reference_s", "floor_s", "batch", "d_in", "d_sae", "l0"} where
    "l0" is the measured mean number of active features per input. ``dtype`` is the compute
    dtype of the encoder product: float32, or bfloat16 (autocast; CUDA only). With
    ``details`` the result also holds the forward+backward and optimizer times of each side
    and the largest relative difference between the two implementations' loss and gradients.
    """
    if batch <= 0 or repeats <= 0:
        raise SAEError(f"batch and repeats must be positive, got {batch} and {repeats}")
    device = torch.device(device)
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "fp32": torch.float32,
                 "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}.get(dtype, dtype)
    if dtype not in (torch.float32, torch.bfloat16):
        raise SAEError(f"dtype must be float32 or bfloat16, got {dtype}")
    if dtype == torch.bfloat16 and device.type != "cuda":
        raise SAEError("bfloat16 autocast is only used on CUDA; pass dtype float32 on CPU")
    autocast = dtype == torch.bfloat16

    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, d_in, generator=gen).to(device)
    ours = make_benchmark_sae(d_in, expansion, l0, device, seed)
    ref = {name: nn.Parameter(getattr(ours, name).detach().clone()) for name in PARAM_NAMES}
    ours_params = [getattr(ours, name) for name in PARAM_NAMES]
    ours_opt = _adam(ours_params, fused=True)
    ref_opt = _adam(list(ref.values()), fused=False)

    with torch.no_grad():
        measured_l0 = float(ours.encode_scaled(x).gt(0).sum(-1).float().mean())
    log.info("benchmark: batch %d, n %d, m %d, measured L0 %.2f", batch, d_in, ours.d_sae,
             measured_l0)

    def fwd_bwd(loss_fn, model, opt):
        """Forward and backward of one side, the same way for both (timed and compared)."""
        def step() -> dict[str, Tensor]:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=autocast):
                losses = loss_fn(model, x, l1_coeff)
            losses["loss"].backward()
            return losses
        return step

    ours_fwd_bwd = fwd_bwd(hybrid_gated_step_loss, ours, ours_opt)
    ref_fwd_bwd = fwd_bwd(dense_reference_losses, ref, ref_opt)

    result: dict[str, float | int | str] = {}
    if details:
        ours_losses = {k: v.detach() for k, v in ours_fwd_bwd().items()}
        ref_losses = {k: v.detach() for k, v in ref_fwd_bwd().items()}
        result["max_rel_diff_loss"] = float(
            (ours_losses["loss"] - ref_losses["loss"]).abs() / ref_losses["loss"].abs())
        result["max_rel_diff_grad"] = max(
            float((getattr(ours, k).grad - ref[k].grad).abs().max()
                  / ref[k].grad.abs().max().clamp_min(1e-30)) for k in PARAM_NAMES)
        result["ours_fwd_bwd_s"] = _median_time(ours_fwd_bwd, repeats, device)
        result["ours_optimizer_s"] = _median_time(ours_opt.step, repeats, device)
        result["dense_reference_fwd_bwd_s"] = _median_time(ref_fwd_bwd, repeats, device)
        result["dense_reference_optimizer_s"] = _median_time(ref_opt.step, repeats, device)

    def ours_step() -> None:
        ours_fwd_bwd()
        ours_opt.step()

    def ref_step() -> None:
        ref_fwd_bwd()
        ref_opt.step()

    w_gate = ours.W_gate.detach()

    def floor() -> Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            return x @ w_gate.T

    # Warm each up once, then interleave single timed runs so that drift in machine load
    # (other processes on a shared CPU) hits all three alike; report medians.
    fns = {"floor": floor, "ours": ours_step, "ref": ref_step}
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - start)
    ours_s, ref_s, floor_s = times["ours"], times["ref"], times["floor"]
    result.update({
        "ours_s": statistics.median(ours_s),
        "dense_reference_s": statistics.median(ref_s),
        "floor_s": statistics.median(floor_s),
        "batch": batch, "d_in": d_in, "d_sae": ours.d_sae, "l0": measured_l0,
    })
    return result


def format_benchmark(result: dict[str, float | int | str]) -> str:
    """A short human-readable table of a ``run_benchmark`` result."""
    floor = float(result["floor_s"])
    lines = [
        f"hybrid-gated SAE training step: batch {result['batch']}, d_in {result['d_in']}, "
        f"d_sae {result['d_sae']}, measured L0 {float(result['l0']):.1f}",
        f"  floor (one dense encoder product) {floor:8.3f} s",
        f"  ours (fast step + fused Adam)     {float(result['ours_s']):8.3f} s  "
        f"({float(result['ours_s']) / floor:.2f}x floor)",
        f"  dense autograd reference + Adam   {float(result['dense_reference_s']):8.3f} s  "
        f"({float(result['dense_reference_s']) / floor:.2f}x floor, "
        f"{float(result['dense_reference_s']) / float(result['ours_s']):.2f}x ours)",
    ]
    for key in ("ours_fwd_bwd_s", "ours_optimizer_s", "dense_reference_fwd_bwd_s",
                "dense_reference_optimizer_s", "max_rel_diff_loss", "max_rel_diff_grad"):
        if key in result:
            lines.append(f"  {key:<32} {float(result[key]):.4g}")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--d-in", type=int, default=768)
    parser.add_argument("--expansion", type=int, default=64)
    parser.add_argument("--l0", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--details", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default, one per core)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    res = run_benchmark(args.batch, args.d_in, args.expansion, args.l0, args.repeats,
                        args.device, args.dtype, details=args.details)
    print(json.dumps(res) if args.json else format_benchmark(res))
