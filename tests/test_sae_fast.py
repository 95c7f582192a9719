"""The fast hybrid-gated training step equals the plain autograd loss and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from saerad.sae.benchmark import (PARAM_NAMES, dense_reference_losses, make_benchmark_sae,
                                  run_benchmark)
from saerad.sae.errors import SAEError
from saerad.sae.fast import SPARSE_MAX_DENSITY, gate_density, hybrid_gated_step_loss
from saerad.sae.hybrid_gated import HybridGatedConfig, HybridGatedSAE

L1 = 0.05


def _random_sae(d_in: int = 16, expansion: int = 8, gate_shift: float = 0.0,
                seed: int = 0) -> HybridGatedSAE:
    """Non-trivial parameters: decoder norms, magnitudes and biases all away from their init."""
    g = torch.Generator().manual_seed(seed)
    sae = HybridGatedSAE(HybridGatedConfig(d_in=d_in, expansion=expansion), generator=g)
    m = sae.d_sae
    with torch.no_grad():
        sae.W_dec.mul_(0.2 + 2 * torch.rand(m, generator=g))
        sae.r_mag.copy_(0.3 * torch.randn(m, generator=g))
        sae.b_mag.copy_(0.3 * torch.randn(m, generator=g))
        sae.b_dec.copy_(0.3 * torch.randn(d_in, generator=g))
        sae.b_gate.copy_(gate_shift + 0.3 * torch.randn(m, generator=g))
    return sae


def _grads(sae: HybridGatedSAE, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    losses["loss"].backward()
    return {k: getattr(sae, k).grad.clone() for k in PARAM_NAMES}


def _assert_same(out: dict, grads: dict, ref: dict, ref_grads: dict) -> None:
    for k in ("loss", "recon", "sparsity", "aux"):
        torch.testing.assert_close(out[k].detach(), ref[k].detach(), rtol=1e-5, atol=1e-6)
    for k in PARAM_NAMES:
        # fp32 sums in a different order: tolerance relative to the gradient's own scale.
        scale = float(ref_grads[k].abs().max())
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-5, atol=1e-6 * max(scale, 1.0),
                                   msg=lambda m, k=k: f"gradient of {k}: {m}")


# Gate shifts giving: no feature active, sparse, about half active, every feature active.
@pytest.mark.parametrize("gate_shift", [-100.0, -1.2, 0.0, 100.0])
@pytest.mark.parametrize("path", ["sparse", "dense", "auto"])
def test_equals_module_reference(gate_shift: float, path: str) -> None:
    sae = _random_sae(gate_shift=gate_shift)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1)) * 1.5
    ref = sae.forward_losses(x, L1)
    ref_grads = _grads(sae, ref)
    out = hybrid_gated_step_loss(sae, x, L1, path=path)
    _assert_same(out, _grads(sae, out), ref, ref_grads)
    density = float((x @ sae.W_gate.T + sae.b_gate > 0).float().mean())
    if gate_shift == -100.0:
        assert density == 0.0 and float(out["sparsity"].detach()) == 0.0
    if gate_shift == 100.0:
        assert density == 1.0


@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_equals_two_product_reference_at_larger_size(path: str) -> None:
    # The SAELens-style reference forms W_mag and runs two encoder products; same maths.
    sae = _random_sae(d_in=48, expansion=16, gate_shift=-2.0, seed=3)
    x = torch.randn(64, 48, generator=torch.Generator().manual_seed(4))
    params = {k: torch.nn.Parameter(getattr(sae, k).detach().clone()) for k in PARAM_NAMES}
    ref = dense_reference_losses(params, x, L1)
    ref["loss"].backward()
    ref_grads = {k: p.grad for k, p in params.items()}
    out = hybrid_gated_step_loss(sae, x, L1, path=path)
    _assert_same(out, _grads(sae, out), ref, ref_grads)
    assert float(ref["sparsity"].detach()) > 0  # the sparse regime is really exercised


@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_hand_computed_case(path: str) -> None:
    # n = m = 2. Sample 1 fires both features, sample 2 only feature 0 (worked out by hand:
    # recon (81.25 + 0.5) / 2, sparsity 0.1 * (6 + 1) / 2, aux (1 + 0.25) / 2).
    sae = HybridGatedSAE(HybridGatedConfig(d_in=2, d_sae=2))
    with torch.no_grad():
        sae.W_gate.copy_(torch.eye(2))
        sae.b_gate.copy_(torch.tensor([0.0, -1.0]))
        sae.r_mag.copy_(torch.tensor([0.0, math.log(2.0)]))
        sae.b_mag.copy_(torch.tensor([0.5, 0.0]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        sae.b_dec.zero_()
    x = torch.tensor([[2.0, 3.0], [1.0, 0.5]])
    out = hybrid_gated_step_loss(sae, x, 0.1, path=path)
    expected = {"recon": 40.875, "sparsity": 0.35, "aux": 0.625, "loss": 41.85}
    for k, v in expected.items():
        assert float(out[k].detach()) == pytest.approx(v, rel=1e-6)
    grads = _grads(sae, out)
    # d/db_dec: mean over samples of -2(x - x_hat) - 2(x - x_hat_aux) = ([1, 18] + [1, -1]
    # + [0, 2] + [0, -1]) / 2; d/db_mag: dx_hat/2 . W_dec[:, i] where h_i > 0.
    torch.testing.assert_close(grads["b_dec"], torch.tensor([1.0, 9.0]))
    torch.testing.assert_close(grads["b_mag"], torch.tensor([1.0, 18.0]))


def test_support_in_blocks_and_double_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    import saerad.sae.fast as fast

    # Blocks of 3 rows: the support is found block by block and must come out row-major.
    monkeypatch.setattr(fast, "SUPPORT_BLOCK_ELEMENTS", 3 * 128)
    sae = _random_sae(gate_shift=-0.8, seed=8)
    x = torch.randn(20, 16, generator=torch.Generator().manual_seed(9))
    ref = sae.forward_losses(x, L1)
    sae.zero_grad(set_to_none=True)
    ref["loss"].backward()
    ref_grads = {k: 2 * getattr(sae, k).grad for k in PARAM_NAMES}
    out = hybrid_gated_step_loss(sae, x, L1, path="sparse")
    sae.zero_grad(set_to_none=True)
    # Two backward passes accumulate: the second must not reuse the first one's gradient memory.
    out["loss"].backward(retain_graph=True)
    out["loss"].backward()
    for k in PARAM_NAMES:
        scale = float(ref_grads[k].abs().max())
        torch.testing.assert_close(getattr(sae, k).grad, ref_grads[k], rtol=1e-5,
                                   atol=1e-6 * max(scale, 1.0))


@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_zero_norm_decoder_column(path: str) -> None:
    # An active feature whose decoder column is 0: the norm's gradient is 0 there, as autograd.
    sae = _random_sae(gate_shift=0.5, seed=5)
    with torch.no_grad():
        sae.W_dec[:, 0] = 0.0
    x = torch.randn(16, 16, generator=torch.Generator().manual_seed(6))
    ref = sae.forward_losses(x, L1)
    ref_grads = _grads(sae, ref)
    out = hybrid_gated_step_loss(sae, x, L1, path=path)
    grads = _grads(sae, out)
    _assert_same(out, grads, ref, ref_grads)
    assert torch.isfinite(grads["W_dec"]).all()


def test_auto_path_follows_density(monkeypatch: pytest.MonkeyPatch) -> None:
    import saerad.sae.fast as fast

    used: list[str] = []
    for name, cls in (("sparse", fast._SparseStep), ("dense", fast._DenseStep)):
        monkeypatch.setattr(cls, "apply", (lambda orig, n: lambda *a: (used.append(n), orig(*a))[1])(
            cls.apply, name))
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(2))
    hybrid_gated_step_loss(_random_sae(gate_shift=-100.0), x, L1)
    hybrid_gated_step_loss(_random_sae(gate_shift=100.0), x, L1)
    assert used == ["sparse", "dense"]


def test_gate_density_counts_sampled_rows() -> None:
    P = torch.tensor([[1.0, -1.0, 3.0], [0.0, 2.0, -5.0], [9.0, 9.0, 9.0]])
    neg_b = torch.tensor([0.5, 0.5, 0.5])
    assert gate_density(P, neg_b, rows=2) == pytest.approx(3 / 6)
    assert gate_density(P, neg_b, rows=3) == pytest.approx(6 / 9)
    assert 0 < SPARSE_MAX_DENSITY < 1


def test_bad_input_is_named() -> None:
    sae = _random_sae()
    with pytest.raises(SAEError, match=r"shape \(batch, 16\)"):
        hybrid_gated_step_loss(sae, torch.randn(4, 15), L1)
    with pytest.raises(SAEError, match="path must be"):
        hybrid_gated_step_loss(sae, torch.randn(4, 16), L1, path="fastest")
    with pytest.raises(SAEError, match="W_gate"):
        hybrid_gated_step_loss(torch.nn.Linear(2, 2), torch.randn(4, 2), L1)


def test_benchmark_sae_hits_requested_l0() -> None:
    # b_gate is the normal quantile for l0 / m, so the mean L0 over 512 inputs is l0 +- ~0.2.
    sae = make_benchmark_sae(d_in=64, expansion=16, l0=15, device=torch.device("cpu"))
    x = torch.randn(512, 64, generator=torch.Generator().manual_seed(7))
    l0 = float((sae.encode_scaled(x) > 0).sum(-1).float().mean())
    assert abs(l0 - 15) < 1.5
    with pytest.raises(SAEError, match="l0"):
        make_benchmark_sae(d_in=8, expansion=2, l0=16, device=torch.device("cpu"))


def test_benchmark_smoke() -> None:
    res = run_benchmark(batch=32, d_in=32, expansion=4, l0=3, repeats=1, details=True)
    for k in ("ours_s", "dense_reference_s", "floor_s", "batch", "d_in", "d_sae", "l0"):
        assert k in res and res[k] > 0, k
    assert (res["batch"], res["d_in"], res["d_sae"]) == (32, 32, 128)
    assert res["max_rel_diff_loss"] < 1e-5 and res["max_rel_diff_grad"] < 1e-4
    with pytest.raises(SAEError, match="bfloat16"):
        run_benchmark(batch=4, d_in=8, expansion=2, l0=1, repeats=1, dtype="bfloat16")
