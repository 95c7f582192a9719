"""SAE-Rad's "hybrid gated" SAE (arXiv 2410.03334 §4.1; docs/method.md, Hybrid gated).

A gated encoder (Rajamanoharan et al. 2024) with the April-update decoder (Conerly et al.
2024): no input centring, unconstrained decoder norms that enter the sparsity penalty, and an
auxiliary reconstruction from the rectified gate pre-activations that trains the decoder too
(no stop-gradient).

    pi_gate = W_gate x + b_gate
    pi_mag  = exp(r_mag) * (W_gate x) + b_mag          (W_mag = exp(r_mag) row-wise * W_gate)
    h       = 1[pi_gate > 0] * ReLU(pi_mag)
    x_hat   = W_dec h + b_dec
    RA      = ReLU(pi_gate)
    loss    = ||x - x_hat||^2 + lambda * sum_i RA_i ||W_dec[:, i]||_2 + ||x - (W_dec RA + b_dec)||^2
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from saerad.sae.base import SAEConfig, SparseAutoencoder, add_gated_parameters, init_gated_parameters, sum_sq


@dataclass
class HybridGatedConfig(SAEConfig):
    """SAE-Rad defaults: n = 768, expansion 64 (m = 49,152)."""


class HybridGatedSAE(SparseAutoencoder):
    arch = "hybrid-gated"
    config_class = HybridGatedConfig
    unit_norm_decoder = False
    loss_terms = ("recon", "sparsity", "aux")

    def __init__(self, config: HybridGatedConfig, generator: torch.Generator | None = None):
        super().__init__(config)
        add_gated_parameters(self, self.d_sae, self.d_in)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        init_gated_parameters(self, generator)

    def pre_activations(self, x_scaled: Tensor) -> tuple[Tensor, Tensor]:
        """(pi_gate, pi_mag); one matmul serves both because W_mag shares W_gate's rows."""
        proj = x_scaled @ self.W_gate.T
        return proj + self.b_gate, torch.exp(self.r_mag) * proj + self.b_mag

    def encode_scaled(self, x_scaled: Tensor) -> Tensor:
        pi_gate, pi_mag = self.pre_activations(x_scaled)
        return (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)

    def forward_losses(self, x_scaled: Tensor, l1_coeff: float) -> dict[str, Tensor]:
        pi_gate, pi_mag = self.pre_activations(x_scaled)
        h = (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)
        ra = torch.relu(pi_gate)
        recon = sum_sq(x_scaled - self.decode(h))
        sparsity = l1_coeff * (ra * self.decoder_norms()).sum(dim=-1).mean()
        # No detach: in SAE-Rad the auxiliary reconstruction also trains W_dec and b_dec.
        aux = sum_sq(x_scaled - self.decode(ra))
        return {"loss": recon + sparsity + aux, "recon": recon, "sparsity": sparsity, "aux": aux}
