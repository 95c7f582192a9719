"""The interface every sparse autoencoder (SAE) architecture implements, and the registry.

Conventions shared by all architectures (docs/method.md: data scaling, architectures,
initialisation; docs/sae.md):

- n = ``d_in`` input dimensions, m = ``d_sae`` features; parameters are float32 tensors named
  as in the papers (``W_dec`` is (n, m), encoder matrices are (m, n)).
- ``scale`` is the data scaling constant c (E||c z||_2 = sqrt(n) on the training tokens).
  It is a buffer, so it travels with the weights. ``encode`` applies it; everything that
  takes ``x_scaled`` (``encode_scaled``, ``forward_losses``) expects it already applied, and
  ``decode`` returns reconstructions in the scaled space.
- ``forward_losses(x_scaled, l1_coeff)`` returns the loss terms by name; every term is a
  per-sample sum over dimensions/features, averaged over the batch, and ``"loss"`` is their
  sum (weights already applied).
- Architectures whose decoder columns must have unit norm say so with
  ``unit_norm_decoder = True``; the trainer then calls ``constrain_gradients`` before and
  ``constrain_weights`` after each optimiser step.
"""

from __future__ import annotations

import importlib
from abc import abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from saerad.sae.errors import SAEDataError, SAEError, UnknownArchitectureError


@dataclass
class SAEConfig:
    """Sizes shared by all architectures. ``d_sae`` defaults to ``expansion * d_in``."""

    d_in: int = 768
    expansion: int = 64
    d_sae: int | None = None

    def __post_init__(self) -> None:
        if self.d_in <= 0:
            raise SAEError(f"SAE d_in must be positive, got {self.d_in}")
        if self.d_sae is None:
            if self.expansion <= 0:
                raise SAEError(f"SAE expansion must be positive, got {self.expansion}")
            self.d_sae = self.expansion * self.d_in
        if self.d_sae <= 0:
            raise SAEError(f"SAE d_sae must be positive, got {self.d_sae}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SAEConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SAEError(
                f"unknown option(s) {unknown} for {cls.__name__}; valid options: {sorted(known)}"
            )
        return cls(**values)


def random_unit_rows(m: int, n: int, generator: torch.Generator | None) -> Tensor:
    """An (m, n) matrix whose rows are independent uniformly random unit directions."""
    w = torch.randn(m, n, generator=generator, dtype=torch.float32)
    return w / w.norm(dim=1, keepdim=True)


def add_gated_parameters(module: nn.Module, d_sae: int, d_in: int) -> None:
    """The parameters of the gated family, under the paper's names and shapes:
    W_gate (m, n), b_gate (m,), r_mag (m,), b_mag (m,), W_dec (n, m), b_dec (n,)."""
    module.W_gate = nn.Parameter(torch.empty(d_sae, d_in))
    module.b_gate = nn.Parameter(torch.empty(d_sae))
    module.r_mag = nn.Parameter(torch.empty(d_sae))
    module.b_mag = nn.Parameter(torch.empty(d_sae))
    module.W_dec = nn.Parameter(torch.empty(d_in, d_sae))
    module.b_dec = nn.Parameter(torch.empty(d_in))


@torch.no_grad()
def init_gated_parameters(module: nn.Module, generator: torch.Generator | None) -> None:
    """Paper App. B.3: biases 0, rows of W_gate random unit directions, W_dec = W_gate^T
    (so decoder columns start at unit norm); r_mag = 0 makes W_mag = W_gate at the start."""
    d_sae, d_in = module.W_gate.shape
    module.W_gate.copy_(random_unit_rows(d_sae, d_in, generator))
    module.W_dec.copy_(module.W_gate.T)
    for p in (module.b_gate, module.r_mag, module.b_mag, module.b_dec):
        p.zero_()


def add_relu_parameters(module: nn.Module, d_sae: int, d_in: int) -> None:
    """The parameters of the single-encoder family (standard, april-update, topk):
    W_enc (m, n), b_enc (m,), W_dec (n, m), b_dec (n,)."""
    module.W_enc = nn.Parameter(torch.empty(d_sae, d_in))
    module.b_enc = nn.Parameter(torch.empty(d_sae))
    module.W_dec = nn.Parameter(torch.empty(d_in, d_sae))
    module.b_dec = nn.Parameter(torch.empty(d_in))


@torch.no_grad()
def init_relu_parameters(module: nn.Module, generator: torch.Generator | None) -> None:
    """The same initialisation as the gated family: biases 0, random unit rows, W_dec = W_enc^T."""
    d_sae, d_in = module.W_enc.shape
    module.W_enc.copy_(random_unit_rows(d_sae, d_in, generator))
    module.W_dec.copy_(module.W_enc.T)
    module.b_enc.zero_()
    module.b_dec.zero_()


def sum_sq(diff: Tensor) -> Tensor:
    """Per-sample squared L2 norm, averaged over the batch: the unit of every loss term."""
    return diff.pow(2).sum(dim=-1).mean()


class SparseAutoencoder(nn.Module):
    """Base class: scaling, the shared helpers and the hooks the trainer calls."""

    arch: ClassVar[str]
    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    unit_norm_decoder: ClassVar[bool] = False
    loss_terms: ClassVar[tuple[str, ...]]  # keys of forward_losses besides "loss"

    W_dec: nn.Parameter
    b_dec: nn.Parameter
    scale: Tensor

    def __init__(self, config: SAEConfig):
        """Subclasses create their parameters after this and then call reset_parameters."""
        super().__init__()
        if not isinstance(config, self.config_class):
            raise SAEError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.d_in = config.d_in
        self.d_sae = int(config.d_sae)  # resolved in __post_init__
        self.register_buffer("scale", torch.tensor(1.0, dtype=torch.float32))

    # --- what each architecture defines -------------------------------------------------
    @abstractmethod
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise (docs/method.md): biases 0, encoder rows random unit directions, W_dec = W_enc^T."""

    @abstractmethod
    def encode_scaled(self, x_scaled: Tensor) -> Tensor:
        """Feature codes h (batch, m) of inputs that are already multiplied by ``scale``."""

    @abstractmethod
    def forward_losses(self, x_scaled: Tensor, l1_coeff: float) -> dict[str, Tensor]:
        """Loss terms by name, plus their sum under ``"loss"``."""

    # --- shared behaviour ----------------------------------------------------------------
    def forward(self, x_scaled: Tensor, l1_coeff: float) -> dict[str, Tensor]:
        return self.forward_losses(x_scaled, l1_coeff)

    def set_scale(self, c: float) -> None:
        if not c > 0:
            raise SAEError(f"the data scaling constant must be positive, got {c}")
        self.scale.fill_(float(c))

    def check_input(self, x: Tensor) -> None:
        """SAEDataError unless ``x`` is a batch of ``d_in``-d tokens: tokens from another
        encoder (another width) would otherwise fail deep inside a matmul, or not at all."""
        if x.ndim not in (1, 2) or x.shape[-1] != self.d_in:
            raise SAEDataError(
                f"tokens have shape {tuple(x.shape)} but this {self.arch} SAE takes {self.d_in}-d "
                f"inputs (N, {self.d_in}); were the tokens made by another encoder than the "
                "SAE was trained on?"
            )

    def encode(self, x: Tensor) -> Tensor:
        """Feature codes h of raw (unscaled) tokens: applies the scaling constant first."""
        self.check_input(x)
        return self.encode_scaled(x * self.scale)

    def decode(self, h: Tensor) -> Tensor:
        """x_hat = W_dec h + b_dec, in the scaled space."""
        return h @ self.W_dec.T + self.b_dec

    def reconstruct(self, x: Tensor) -> Tensor:
        """Reconstruction of raw tokens, returned in the raw (unscaled) space."""
        return self.decode(self.encode(x)) / self.scale

    def decoder_norms(self) -> Tensor:
        """||W_dec[:, i]||_2 for every feature i."""
        return self.W_dec.norm(dim=0)

    def feature_activations(self, x: Tensor) -> Tensor:
        """f_i = h_i * ||W_dec[:, i]||_2 of raw tokens (docs/method.md, Feature activations)."""
        return self.encode(x) * self.decoder_norms()

    def concept_directions(self) -> Tensor:
        """Unit-norm decoder columns W_dec[:, i] / ||W_dec[:, i]||, as an (m, n) matrix."""
        w = self.W_dec.detach()
        return (w / w.norm(dim=0, keepdim=True).clamp_min(1e-12)).T

    @torch.no_grad()
    def constrain_gradients(self) -> None:
        """Remove the part of each decoder column's gradient parallel to the column.

        With unit-norm columns that component would only change the norm, which the
        renormalisation after the step undoes; removing it keeps Adam's moments honest.
        """
        if not self.unit_norm_decoder or self.W_dec.grad is None:
            return
        w, g = self.W_dec, self.W_dec.grad
        g -= w * (w * g).sum(dim=0, keepdim=True)

    @torch.no_grad()
    def constrain_weights(self) -> None:
        """Renormalise decoder columns to unit norm, where the architecture requires it."""
        if self.unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-12)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, d_in={self.d_in}, d_sae={self.d_sae}"


# Registry: name -> "module:Class". A constant mapping resolved lazily, so importing one
# architecture never imports the others and nothing global is mutated at run time.
ARCHITECTURES: Mapping[str, str] = {
    "hybrid-gated": "saerad.sae.hybrid_gated:HybridGatedSAE",
    "gated": "saerad.sae.gated:GatedSAE",
    "standard": "saerad.sae.standard:StandardSAE",
    "april-update": "saerad.sae.april_update:AprilUpdateSAE",
    "topk": "saerad.sae.topk:TopKSAE",
}


def architecture_names() -> list[str]:
    return sorted(ARCHITECTURES)


def get_architecture(name: str) -> type[SparseAutoencoder]:
    """The SAE class registered under ``name``; UnknownArchitectureError lists the choices."""
    if name not in ARCHITECTURES:
        raise UnknownArchitectureError(name, ARCHITECTURES)
    module_name, class_name = ARCHITECTURES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_config(name: str, **options: Any) -> SAEConfig:
    """The architecture's config dataclass from keyword options (unknown ones are errors)."""
    return get_architecture(name).config_class.from_dict(options)


def create_sae(
    name: str, config: SAEConfig | None = None, *, seed: int | None = None, **options: Any
) -> SparseAutoencoder:
    """A freshly initialised SAE. Pass a config object or its fields as keyword options."""
    cls = get_architecture(name)
    if config is None:
        config = cls.config_class.from_dict(options)
    elif options:
        raise SAEError("pass either a config object or keyword options to create_sae, not both")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return cls(config, generator=generator)
