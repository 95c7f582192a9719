"""Sparse autoencoders for SAE-Rad: architectures, scaling, training, checkpoints, metrics.

Quick use::

    from saerad.sae import TrainConfig, train_sae, load_sae, evaluate_sae
    sae = train_sae("train_tokens.npy", TrainConfig(steps=10_000), out_dir="runs/sae")
    h = sae.encode(z)            # raw tokens in, sparse codes out (scaling applied)

The library needs numpy, torch and safetensors (its plots also matplotlib) and nothing of the
evaluation harness. User errors raise ``SAEError`` (``SAEDataError`` for token files and
checkpoints, ``UnknownArchitectureError`` for a bad architecture name); each message says
what is wrong and how to fix it.
"""

from saerad.sae.base import (ARCHITECTURES, SAEConfig, SparseAutoencoder, architecture_names,
                             build_config, create_sae, get_architecture)
from saerad.sae.checkpoint import load_sae, save_sae
from saerad.sae.errors import SAEDataError, SAEError, TargetL0Error, UnknownArchitectureError
from saerad.sae.metrics import SAEEvalReport, evaluate_sae, explained_variance
from saerad.sae.scaling import estimate_scale
from saerad.sae.tokens import iter_token_batches, load_token_array
from saerad.sae.target_l0 import L0Calibration, find_l1_for_target_l0
from saerad.sae.trainer import TrainConfig, Trainer, l1_at, lr_at, train_sae

__all__ = [
    "ARCHITECTURES", "L0Calibration", "SAEConfig", "SAEDataError", "SAEError", "SAEEvalReport",
    "SparseAutoencoder", "TargetL0Error", "TrainConfig", "Trainer", "UnknownArchitectureError",
    "architecture_names", "build_config", "create_sae", "estimate_scale", "evaluate_sae",
    "explained_variance", "find_l1_for_target_l0", "get_architecture", "iter_token_batches", "l1_at", "load_sae",
    "load_token_array", "lr_at", "save_sae", "train_sae",
]
