"""Gated SAE (Rajamanoharan et al. 2024), as described in SAE-Rad §3.2.

See docs/method.md, "Architectures compared".

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
from torch import Tensor

from saerad.sae.base import SAEConfig, SparseAutoencoder, add_gated_parameters, init_gated_parameters, sum_sq


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
        add_gated_parameters(self, self.d_sae, self.d_in)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        init_gated_parameters(self, generator)

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
