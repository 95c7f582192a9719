"""Loss terms of every SAE architecture on tiny hand-picked examples (n=2, m=3).

Expected values come from the formulas in docs/method.md (Sparse autoencoder architectures) /
the papers, written out again here
in numpy (and, for hybrid-gated, worked out by hand in the comments), never by calling the
library's own code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saerad.sae import SAEError, UnknownArchitectureError, architecture_names, create_sae, get_architecture

ALL = ["april-update", "gated", "hybrid-gated", "standard", "topk"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


X = np.array([[1.0, 2.0], [2.0, -1.0]])
W_ENC = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (m, n) = (3, 2)
W_DEC = np.array([[1.0, 0.0, 0.6], [0.0, 2.0, 0.8]])  # (n, m), column norms 1, 2, 1
B_DEC = np.array([0.1, -0.1])
L1 = 0.1


def _set(sae, **values) -> None:
    with torch.no_grad():
        for name, v in values.items():
            getattr(sae, name).copy_(torch.as_tensor(np.asarray(v), dtype=torch.float32))


def _losses(sae, x=X, l1=L1) -> dict[str, float]:
    out = sae.forward_losses(torch.tensor(x, dtype=torch.float32), l1)
    return {k: float(v.detach()) for k, v in out.items()}


def _hybrid_gated_sae():
    sae = create_sae("hybrid-gated", d_in=2, d_sae=3, seed=0)
    _set(sae, W_gate=W_ENC, b_gate=[0.0, -1.0, -0.5], r_mag=[0.0, math.log(2.0), 0.0],
         b_mag=[0.5, 0.0, -1.0], W_dec=W_DEC, b_dec=B_DEC)
    return sae


def test_registry_lists_all_architectures():
    assert architecture_names() == ALL
    for name in ALL:
        assert get_architecture(name).arch == name


def test_unknown_architecture_lists_choices():
    with pytest.raises(UnknownArchitectureError) as err:
        get_architecture("jumprelu")
    assert err.value.choices == ALL
    for name in ALL:
        assert name in str(err.value)
    assert isinstance(err.value, SAEError)
    import pickle

    again = pickle.loads(pickle.dumps(err.value))  # e.g. raised in a worker process
    assert again.choices == ALL and str(again) == str(err.value)


def test_library_does_not_import_the_harness():
    # saerad.sae must work without the evaluation harness: no `bench` import anywhere in it,
    # at module level or inside functions.
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import saerad.sae

    for path in sorted(Path(saerad.sae.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "bench" or n.startswith("bench.") for n in names), (path, node.lineno)
    # Importing every module (in a fresh interpreter) loads nothing of the harness either.
    modules = sorted(p.stem for p in Path(saerad.sae.__file__).parent.glob("*.py") if p.stem != "__init__")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module('saerad.sae.' + m)\n"
            "sys.exit(any(m == 'bench' or m.startswith('bench.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_unknown_config_option_is_an_error():
    with pytest.raises(SAEError, match="valid options"):
        create_sae("standard", d_in=4, expansion=2, k=3)


def test_hybrid_gated_hand_computed():
    # Sample 1, x = (1, 2):  W_gate x = (1, 2, 3)
    #   pi_gate = (1, 1, 2.5);  pi_mag = (1*1 + .5, 2*2 + 0, 3 - 1) = (1.5, 4, 2);  h = (1.5, 4, 2)
    #   x_hat = 1.5*(1,0) + 4*(0,2) + 2*(.6,.8) + (.1,-.1) = (2.8, 9.5); ||x - x_hat||^2 = 59.49
    #   RA = (1, 1, 2.5); sparsity = .1 * (1*1 + 1*2 + 2.5*1) = .55
    #   x_hat(RA) = (1,0) + (0,2) + 2.5*(.6,.8) + (.1,-.1) = (2.6, 3.9); aux = 1.6^2 + 1.9^2 = 6.17
    # Sample 2, x = (2, -1):  W_gate x = (2, -1, 1)
    #   pi_gate = (2, -2, .5);  pi_mag = (2.5, -2, 0);  h = (2.5, 0, 0)
    #   x_hat = (2.6, -.1); recon = .6^2 + .9^2 = 1.17
    #   RA = (2, 0, .5); sparsity = .1 * (2*1 + .5*1) = .25
    #   x_hat(RA) = 2*(1,0) + .5*(.6,.8) + (.1,-.1) = (2.4, .3); aux = .4^2 + 1.3^2 = 1.85
    got = _losses(_hybrid_gated_sae())
    expected = {"recon": (59.49 + 1.17) / 2, "sparsity": (0.55 + 0.25) / 2, "aux": (6.17 + 1.85) / 2}
    expected["loss"] = sum(expected.values())
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-6), k
    h = _hybrid_gated_sae().encode_scaled(torch.tensor(X, dtype=torch.float32))
    np.testing.assert_allclose(h.detach().numpy(), [[1.5, 4.0, 2.0], [2.5, 0.0, 0.0]], rtol=1e-6)


def test_gated_numpy_reference():
    sae = create_sae("gated", d_in=2, d_sae=3, seed=0)
    w_dec = W_DEC / np.linalg.norm(W_DEC, axis=0)  # the gated SAE keeps unit-norm columns
    b_gate, r_mag, b_mag = np.array([0.0, -1.0, -0.5]), np.array([0.0, 0.3, -0.2]), np.array([0.5, 0.0, -1.0])
    _set(sae, W_gate=W_ENC, b_gate=b_gate, r_mag=r_mag, b_mag=b_mag, W_dec=w_dec, b_dec=B_DEC)
    xc = X - B_DEC  # input centred by b_dec
    pi_gate = xc @ W_ENC.T + b_gate
    pi_mag = (xc @ W_ENC.T) * np.exp(r_mag) + b_mag
    h = (pi_gate > 0) * np.maximum(pi_mag, 0)
    ra = np.maximum(pi_gate, 0)
    recon = ((X - (h @ w_dec.T + B_DEC)) ** 2).sum(1).mean()
    sparsity = L1 * ra.sum(1).mean()  # plain L1 on RA, no decoder norms
    aux = ((X - (ra @ w_dec.T + B_DEC)) ** 2).sum(1).mean()
    got = _losses(sae)
    assert got == pytest.approx({"loss": recon + sparsity + aux, "recon": recon,
                                 "sparsity": sparsity, "aux": aux}, rel=1e-6)


def test_standard_numpy_reference():
    sae = create_sae("standard", d_in=2, d_sae=3, seed=0)
    w_dec = W_DEC / np.linalg.norm(W_DEC, axis=0)
    b_enc = np.array([0.2, -0.5, -1.0])
    _set(sae, W_enc=W_ENC, b_enc=b_enc, W_dec=w_dec, b_dec=B_DEC)
    h = np.maximum((X - B_DEC) @ W_ENC.T + b_enc, 0)
    recon = ((X - (h @ w_dec.T + B_DEC)) ** 2).sum(1).mean()
    sparsity = L1 * np.abs(h).sum(1).mean()
    assert _losses(sae) == pytest.approx({"loss": recon + sparsity, "recon": recon,
                                          "sparsity": sparsity}, rel=1e-6)


def test_april_update_numpy_reference():
    sae = create_sae("april-update", d_in=2, d_sae=3, seed=0)
    b_enc = np.array([0.2, -0.5, -1.0])
    _set(sae, W_enc=W_ENC, b_enc=b_enc, W_dec=W_DEC, b_dec=B_DEC)
    h = np.maximum(X @ W_ENC.T + b_enc, 0)  # no centring
    recon = ((X - (h @ W_DEC.T + B_DEC)) ** 2).sum(1).mean()
    sparsity = L1 * (h * np.array([1.0, 2.0, 1.0])).sum(1).mean()  # decoder norms 1, 2, 1
    assert _losses(sae) == pytest.approx({"loss": recon + sparsity, "recon": recon,
                                          "sparsity": sparsity}, rel=1e-6)


def test_topk_hand_computed_with_dead_latents():
    sae = create_sae("topk", d_in=2, d_sae=3, seed=0, k=1, k_aux=1, aux_coeff=0.5, dead_tokens=10)
    w_dec = W_DEC / np.linalg.norm(W_DEC, axis=0)  # columns (1,0), (0,1), (.6,.8)
    _set(sae, W_enc=W_ENC, b_enc=[0.0, 0.0, -2.0], W_dec=w_dec, b_dec=[0.0, 0.0])
    # pre = x W_enc^T + b_enc: sample 1 (1, 2, 1), sample 2 (2, -1, -1).
    # k=1 keeps feature 1 (value 2) for sample 1 and feature 0 (value 2) for sample 2.
    # recon: x_hat1 = (0, 2) -> err (1, 0) -> 1;  x_hat2 = (2, 0) -> err (0, -1) -> 1.
    sae.train()
    got = _losses(sae)
    assert got == pytest.approx({"loss": 1.0, "recon": 1.0, "aux": 0.0})  # nothing dead yet
    # Feature 2 never fired: 2 tokens per call, so after 5 calls it has missed 10 tokens.
    for _ in range(4):
        sae.forward_losses(torch.tensor(X, dtype=torch.float32), 0.0)
    assert sae.tokens_since_fired.tolist() == [0, 0, 10]
    # Now feature 2 is dead; z keeps ReLU(pre_2) = (1, 0): sample 1 residual (1, 0) -
    # 1*(.6, .8) = (.4, -.8) -> .8; sample 2: z = 0 (pre -1), residual (0, -1) -> 1.
    got = _losses(sae)
    aux = 0.5 * (0.8 + 1.0) / 2
    assert got == pytest.approx({"loss": 1.0 + aux, "recon": 1.0, "aux": aux})
    # The aux loss trains the dead latent's encoder and decoder, not the live latents'.
    sae.zero_grad()
    sae.forward_losses(torch.tensor(X, dtype=torch.float32), 0.0)["aux"].backward()
    assert sae.W_dec.grad[:, 2].abs().sum() > 0 and sae.W_dec.grad[:, :2].abs().sum() == 0
    assert sae.W_enc.grad[2].abs().sum() > 0 and sae.W_enc.grad[:2].abs().sum() == 0


def test_topk_l0_is_k():
    sae = create_sae("topk", d_in=8, d_sae=32, k=5, seed=1)
    h = sae.encode(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) + 3.0)
    assert ((h > 0).sum(1) <= 5).all() and (h > 0).sum(1).float().mean() > 4


def _aux_grad_of(arch: str) -> torch.Tensor | None:
    sae = create_sae(arch, d_in=6, d_sae=12, seed=3)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    sae.forward_losses(x, 0.01)["aux"].backward()
    return sae.W_dec.grad


def test_aux_term_trains_decoder_in_hybrid_gated_only():
    g = _aux_grad_of("hybrid-gated")
    assert g is not None and g.abs().sum() > 0
    g = _aux_grad_of("gated")
    assert g is None or g.abs().sum() == 0


@pytest.mark.parametrize("arch", ALL)
def test_initialisation(arch):
    sae = create_sae(arch, d_in=8, expansion=4, seed=0)
    w_enc = sae.W_gate if arch in ("gated", "hybrid-gated") else sae.W_enc
    np.testing.assert_allclose(w_enc.norm(dim=1).detach().numpy(), 1.0, rtol=1e-6)
    assert torch.equal(sae.W_dec.detach(), w_enc.detach().T)
    for name, p in sae.named_parameters():
        if name.startswith(("b_", "r_")):
            assert torch.count_nonzero(p) == 0, name
    # Directions are random: distinct seeds differ, equal seeds agree.
    other = create_sae(arch, d_in=8, expansion=4, seed=1)
    same = create_sae(arch, d_in=8, expansion=4, seed=0)
    assert not torch.equal(sae.W_dec, other.W_dec) and torch.equal(sae.W_dec, same.W_dec)


@pytest.mark.parametrize("arch", ALL)
def test_encode_applies_scale_and_feature_activation(arch):
    sae = create_sae(arch, d_in=4, expansion=2, seed=0)
    sae.set_scale(2.5)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, sae.d_sae))
    z = torch.randn(10, 4, generator=torch.Generator().manual_seed(2))
    h = sae.encode(z)
    assert torch.equal(h, sae.encode_scaled(z * 2.5))
    norms = sae.W_dec.norm(dim=0)
    assert torch.allclose(sae.feature_activations(z), h * norms)
    assert torch.allclose(sae.reconstruct(z), (h @ sae.W_dec.T + sae.b_dec) / 2.5)
    np.testing.assert_allclose(sae.concept_directions().norm(dim=1).numpy(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("arch", ALL)
def test_decoder_constraint_matches_architecture(arch):
    sae = create_sae(arch, d_in=4, expansion=2, seed=0)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    sae.forward_losses(x, 0.1)["loss"].backward()
    sae.constrain_gradients()
    with torch.no_grad():
        sae.W_dec.add_(0.3)
    sae.constrain_weights()
    norms = sae.W_dec.norm(dim=0)
    if sae.unit_norm_decoder:
        assert arch in ("gated", "standard", "topk")
        np.testing.assert_allclose(norms.detach().numpy(), 1.0, rtol=1e-6)
    else:
        assert arch in ("hybrid-gated", "april-update")
        assert (norms - 1).abs().max() > 0.05  # left alone


def test_gradient_projection_removes_parallel_component():
    sae = create_sae("standard", d_in=4, expansion=2, seed=0)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    sae.forward_losses(x, 0.1)["loss"].backward()
    sae.constrain_gradients()
    parallel = (sae.W_dec * sae.W_dec.grad).sum(0)
    assert parallel.abs().max() < 1e-5


def test_rejects_bad_sizes():
    with pytest.raises(SAEError, match="d_in"):
        create_sae("hybrid-gated", d_in=0)
    with pytest.raises(SAEError, match="k"):
        create_sae("topk", d_in=4, d_sae=8, k=9)
