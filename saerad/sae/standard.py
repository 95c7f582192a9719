"""The "standard" SAE of Bricken et al. (2023), SAE-Rad Eq. (1)-(3).

    h     = ReLU(W_enc (x - b_dec) + b_enc)
    x_hat = W_dec h + b_dec,   ||W_dec[:, i]||_2 = 1   (renormalised after every step)
    loss  = ||x - x_hat||^2 + lambda * ||h||_1
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from saerad.sae.base import SAEConfig, SparseAutoencoder, add_relu_parameters, init_relu_parameters, sum_sq


@dataclass
class StandardConfig(SAEConfig):
    pass


class StandardSAE(SparseAutoencoder):
    arch = "standard"
    config_class = StandardConfig
    unit_norm_decoder = True
    loss_terms = ("recon", "sparsity")

    def __init__(self, config: StandardConfig, generator: torch.Generator | None = None):
        super().__init__(config)
        add_relu_parameters(self, self.d_sae, self.d_in)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        init_relu_parameters(self, generator)

    def encode_scaled(self, x_scaled: Tensor) -> Tensor:
        return torch.relu((x_scaled - self.b_dec) @ self.W_enc.T + self.b_enc)

    def forward_losses(self, x_scaled: Tensor, l1_coeff: float) -> dict[str, Tensor]:
        h = self.encode_scaled(x_scaled)
        recon = sum_sq(x_scaled - self.decode(h))
        sparsity = l1_coeff * h.sum(dim=-1).mean()  # h >= 0, so ||h||_1 = sum h
        return {"loss": recon + sparsity, "recon": recon, "sparsity": sparsity}
