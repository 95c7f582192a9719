"""Diffusion checkpoints: one directory per model.

    model.safetensors   weights of TokenConditionedUNet (token statistics included); metadata: step
    config.json         {"format", "config", "token_dim", "encoder", "data", "step", "epoch"}
    history.json        the training and validation loss records
    train_state.pt      weights, optimiser state, step and history in one file: what resume reads
    loss.png            the loss curve (written with every checkpoint)

Files are written to a temporary name and renamed into place, so a run killed at any moment
leaves the previous checkpoint whole. Resume reads train_state.pt alone (it holds its own copy of
the weights), so a kill between the two files' renames cannot pair weights of one step with the
optimiser state of another.

A checkpoint names the encoder whose CLS tokens it was trained on (its weights fingerprint, its
token width): `check_encoder` refuses to condition it on tokens of any other encoder, whose
tokens would be meaningless to it even when they happen to have the same width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bench.errors import BenchError, DataError
from saerad.counterfactual.config import DiffusionConfig
from saerad.counterfactual.model import TokenConditionedUNet
from saerad.sae.checkpoint import _atomic_write, write_json

FORMAT = "saerad-counterfactual/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
TRAIN_STATE_FILE = "train_state.pt"
LOSS_PLOT = "loss.png"


def save_model(model: TokenConditionedUNet, directory: Path, meta: dict[str, Any], step: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic_write(directory / WEIGHTS_FILE,
                  lambda p: save_file(tensors, str(p), metadata={"format": FORMAT, "step": str(step)}))
    write_json(directory / CONFIG_FILE, {"format": FORMAT, "config": model.cfg.to_dict(),
                                         "token_dim": model.token_dim, **meta, "step": step})


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"{directory} is not a diffusion checkpoint: {CONFIG_FILE} is missing "
                        "(train one with `bench counterfactual train`)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise DataError(f"{path} has format {meta.get('format')!r}; expected {FORMAT!r}")
    return meta


def weights_step(directory: Path) -> int:
    with safe_open(str(Path(directory) / WEIGHTS_FILE), framework="pt") as f:
        return int((f.metadata() or {}).get("step", -1))


def load_model(directory: Path, device: str = "cpu") -> tuple[TokenConditionedUNet, dict[str, Any]]:
    directory = Path(directory)
    meta = read_meta(directory)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise DataError(f"{directory} has {CONFIG_FILE} but no {WEIGHTS_FILE}")
    model = TokenConditionedUNet(DiffusionConfig.from_dict(meta["config"]), int(meta["token_dim"]))
    tensors = load_file(str(path))
    expected = model.state_dict()
    bad = sorted(set(expected) ^ set(tensors)) or [k for k in expected if tensors[k].shape != expected[k].shape]
    if bad:
        raise DataError(f"{path} does not match the architecture in {CONFIG_FILE} (first mismatch: {bad[0]})")
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta


def encoder_meta(encoder: Any) -> dict[str, Any]:
    return {"name": str(encoder.name), "weights_fingerprint": encoder.weights_fingerprint, "dim": int(encoder.dim)}


def check_encoder(meta: dict[str, Any], encoder: Any, where: str) -> None:
    """Refuse a checkpoint trained on another encoder's tokens (width or fingerprint differs)."""
    want = meta.get("encoder") or {}
    if int(meta.get("token_dim", -1)) != int(encoder.dim):
        raise BenchError(f"the diffusion model in {where} was trained on {meta.get('token_dim')}-d tokens of "
                         f"encoder {want.get('name')!r}, but encoder {encoder.name!r} gives {encoder.dim}-d tokens; "
                         "use the encoder it was trained on (--encoder) or train one for this encoder")
    if want.get("weights_fingerprint") != encoder.weights_fingerprint:
        raise BenchError(f"the diffusion model in {where} was trained on tokens of encoder {want.get('name')!r} "
                         f"(fingerprint {str(want.get('weights_fingerprint'))[:12]}), not of {encoder.name!r} "
                         f"(fingerprint {encoder.weights_fingerprint[:12]}); its tokens mean nothing to it: use that "
                         "encoder (--encoder) or train a model for this one")


def save_train_state(directory: Path, state: dict[str, Any]) -> None:
    _atomic_write(directory / TRAIN_STATE_FILE, lambda p: torch.save(state, p))


def load_train_state(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / TRAIN_STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def save_history(directory: Path, history: dict[str, list]) -> None:
    write_json(directory / HISTORY_FILE, history)
