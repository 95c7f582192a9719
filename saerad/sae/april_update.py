"""The "April update" SAE of Conerly et al. (2024), SAE-Rad Eq. (6)-(7).

    h     = ReLU(W_enc x + b_enc)                    (no input centring)
    x_hat = W_dec h + b_dec                          (decoder norms unconstrained)
    loss  = ||x - x_hat||^2 + lambda * sum_i h_i ||W_dec[:, i]||_2

Initialised like SAE-Rad (docs/method.md, Initialisation: unit random encoder rows,
W_dec = W_enc^T, biases 0) so that comparisons isolate the architecture; Conerly et al. themselves start from
smaller decoder norms and clip gradients, which the SAE-Rad recipe does not do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from saerad.sae.base import SAEConfig, SparseAutoencoder, add_relu_parameters, init_relu_parameters, sum_sq


@dataclass
class AprilUpdateConfig(SAEConfig):
    pass


class AprilUpdateSAE(SparseAutoencoder):
    arch = "april-update"
    config_class = AprilUpdateConfig
    unit_norm_decoder = False
    loss_terms = ("recon", "sparsity")

    def __init__(self, config: AprilUpdateConfig, generator: torch.Generator | None = None):
        super().__init__(config)
        add_relu_parameters(self, self.d_sae, self.d_in)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        init_relu_parameters(self, generator)

    def encode_scaled(self, x_scaled: Tensor) -> Tensor:
        return torch.relu(x_scaled @ self.W_enc.T + self.b_enc)

    def forward_losses(self, x_scaled: Tensor, l1_coeff: float) -> dict[str, Tensor]:
        h = self.encode_scaled(x_scaled)
        recon = sum_sq(x_scaled - self.decode(h))
        sparsity = l1_coeff * (h * self.decoder_norms()).sum(dim=-1).mean()
        return {"loss": recon + sparsity, "recon": recon, "sparsity": sparsity}
