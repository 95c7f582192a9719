"""Gated SAE (Rajamanoharan et al. 2024), as described in SAE-Rad §3.2 (DESIGN.md §1.3).

    x_c     = x - b_dec                                  (input centred by the decoder bias)
    pi_gate = W_gate x_c + b_gate
    pi_mag  = exp(r_mag) * (W_gate x_c) + b_mag
    h       = 1[pi_gate > 0] * ReLU(pi_mag)
    x_hat   = W_dec h + b_dec,  ||W_dec[:, i]||_2 = 1   (renormalised after every step)
    RA      = ReLU(pi_gate)
    loss    = ||x - x_hat||^2 + lambda * ||RA||_1 + ||x - (W_dec' RA + b_dec')||^2

where W_dec', b_dec' are frozen (detached) copies: the auxiliary term trains the gate
encoder only, never the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from saerad.sae.base import SAEConfig, SparseAutoencoder, random_unit_rows, sum_sq


@dataclass
class GatedConfig(SAEConfig):
    pass


class GatedSAE(SparseAutoencoder):
    arch = "gated"
    config_class = GatedConfig
    unit_norm_decoder = True
    loss_terms = ("recon", "sparsity", "aux")

    def __init__(self, config: GatedConfig, generator: torch.Generator | None = None):
        super().__init__(config)
        m, n = self.d_sae, self.d_in
        self.W_gate = nn.Parameter(torch.empty(m, n))
        self.b_gate = nn.Parameter(torch.empty(m))
        self.r_mag = nn.Parameter(torch.empty(m))
        self.b_mag = nn.Parameter(torch.empty(m))
        self.W_dec = nn.Parameter(torch.empty(n, m))
        self.b_dec = nn.Parameter(torch.empty(n))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        # Same recipe as SAE-Rad; unit rows make W_dec = W_gate^T already unit-norm.
        self.W_gate.copy_(random_unit_rows(self.d_sae, self.d_in, generator))
        self.W_dec.copy_(self.W_gate.T)
        for p in (self.b_gate, self.r_mag, self.b_mag, self.b_dec):
            p.zero_()

    def pre_activations(self, x_scaled: Tensor) -> tuple[Tensor, Tensor]:
        proj = (x_scaled - self.b_dec) @ self.W_gate.T
        return proj + self.b_gate, torch.exp(self.r_mag) * proj + self.b_mag

    def encode_scaled(self, x_scaled: Tensor) -> Tensor:
        pi_gate, pi_mag = self.pre_activations(x_scaled)
        return (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)

    def forward_losses(self, x_scaled: Tensor, l1_coeff: float) -> dict[str, Tensor]:
        pi_gate, pi_mag = self.pre_activations(x_scaled)
        h = (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)
        ra = torch.relu(pi_gate)
        recon = sum_sq(x_scaled - self.decode(h))
        sparsity = l1_coeff * ra.sum(dim=-1).mean()
        # Frozen decoder copy: gradients of the aux term stop at the decoder.
        x_hat_frozen = ra @ self.W_dec.detach().T + self.b_dec.detach()
        aux = sum_sq(x_scaled - x_hat_frozen)
        return {"loss": recon + sparsity + aux, "recon": recon, "sparsity": sparsity, "aux": aux}
