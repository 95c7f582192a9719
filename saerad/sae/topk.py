"""k-sparse (TopK) SAE with the auxiliary dead-latent loss of Gao et al. (2024).

    pre   = W_enc (x - b_dec) + b_enc
    h     = ReLU(TopK_k(pre))                       (the k largest pre-activations survive)
    x_hat = W_dec h + b_dec,   ||W_dec[:, i]||_2 = 1  (renormalised after every step)
    e     = x - x_hat                               (treated as a constant target)
    z     = ReLU(TopK_kaux(pre restricted to dead latents))
    loss  = ||x - x_hat||^2 + alpha * ||e - W_dec z||^2

A latent is dead when it has not fired on any of the last ``dead_tokens`` training tokens
(Gao et al.: 10M tokens); ``tokens_since_fired`` counts this and is updated by
``forward_losses`` while the module is in training mode. No L1 term: sparsity is fixed by k,
so the trainer's lambda is ignored. Differences from Gao et al.: b_dec starts at 0 (not the
geometric median; docs/method.md, Initialisation) and both terms are per-sample sums of
squares like every other architecture here, rather than variance-normalised MSEs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from saerad.sae.errors import SAEError
from saerad.sae.base import SAEConfig, SparseAutoencoder, add_relu_parameters, init_relu_parameters, sum_sq


@dataclass
class TopKConfig(SAEConfig):
    k: int | None = None  # default min(32, d_sae); Gao et al. study k = 32 among others
    k_aux: int | None = None  # default d_in // 2, as Gao et al. (512 for their widths)
    aux_coeff: float = 1.0 / 32.0
    dead_tokens: int = 10_000_000

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.d_sae is not None
        if self.k is None:
            self.k = min(32, self.d_sae)
        if self.k_aux is None:
            self.k_aux = max(1, self.d_in // 2)
        if not 0 < self.k <= self.d_sae:
            raise SAEError(f"topk SAE needs 0 < k <= d_sae ({self.d_sae}), got k={self.k}")
        if self.k_aux <= 0 or self.aux_coeff < 0 or self.dead_tokens <= 0:
            raise SAEError("topk SAE needs k_aux > 0, aux_coeff >= 0 and dead_tokens > 0")


def keep_top(pre: Tensor, k: int) -> Tensor:
    """ReLU of the k largest entries of each row, zeros elsewhere."""
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))


class TopKSAE(SparseAutoencoder):
    arch = "topk"
    config_class = TopKConfig
    unit_norm_decoder = True
    loss_terms = ("recon", "aux")

    tokens_since_fired: Tensor

    def __init__(self, config: TopKConfig, generator: torch.Generator | None = None):
        super().__init__(config)
        m, n = self.d_sae, self.d_in
        self.k = int(config.k or 1)
        self.k_aux = int(config.k_aux or 1)
        add_relu_parameters(self, m, n)
        self.register_buffer("tokens_since_fired", torch.zeros(m, dtype=torch.int64))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        init_relu_parameters(self, generator)
        self.tokens_since_fired.zero_()

    def pre_activations(self, x_scaled: Tensor) -> Tensor:
        return (x_scaled - self.b_dec) @ self.W_enc.T + self.b_enc

    def encode_scaled(self, x_scaled: Tensor) -> Tensor:
        return keep_top(self.pre_activations(x_scaled), self.k)

    def dead_mask(self) -> Tensor:
        return self.tokens_since_fired >= self.config.dead_tokens  # type: ignore[attr-defined]

    def forward_losses(self, x_scaled: Tensor, l1_coeff: float = 0.0) -> dict[str, Tensor]:
        pre = self.pre_activations(x_scaled)
        h = keep_top(pre, self.k)
        x_hat = self.decode(h)
        recon = sum_sq(x_scaled - x_hat)
        dead = self.dead_mask()
        n_dead = int(dead.sum())
        if n_dead > 0:
            masked = pre.masked_fill(~dead, float("-inf"))
            z = keep_top(masked, min(self.k_aux, n_dead))
            residual = (x_scaled - x_hat).detach()
            aux = self.config.aux_coeff * sum_sq(residual - z @ self.W_dec.T)  # type: ignore[attr-defined]
        else:
            aux = recon.new_zeros(())
        if self.training:
            self._update_firing(h)
        return {"loss": recon + aux, "recon": recon, "aux": aux}

    @torch.no_grad()
    def _update_firing(self, h: Tensor) -> None:
        fired = (h > 0).any(dim=0)
        self.tokens_since_fired += h.shape[0]
        self.tokens_since_fired[fired] = 0
