"""SAE checkpoints: one directory per model.

    sae.safetensors   the weights under the papers' names (hybrid-gated: W_gate, b_gate,
                      r_mag, b_mag, W_dec, b_dec) plus ``scale`` (the data scaling constant c)
                      and any other buffers (topk: tokens_since_fired); metadata: arch, step
    config.json       {"format", "arch", "sae_config", "train_config", "step"}
    metrics.json      {"history": [logged training records], "eval": {...}}   (when written)
    train_state.pt    optimiser state, step, torch RNG state and the firing window, for resume

Every file is written to a temporary name and renamed into place, so a crash never leaves a
half-written file; the step stored in both sae.safetensors and train_state.pt lets resume
detect a checkpoint whose files come from different steps.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from saerad.sae.errors import SAEDataError
from saerad.sae.base import SparseAutoencoder, get_architecture

FORMAT = "saerad-sae/1"
WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
TRAIN_STATE_FILE = "train_state.pt"


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n"))


def save_sae(
    sae: SparseAutoencoder,
    directory: str | Path,
    *,
    step: int | None = None,
    train_config: dict[str, Any] | None = None,
) -> Path:
    """Write sae.safetensors and config.json into ``directory`` (created if needed)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    meta = {"format": FORMAT, "arch": sae.arch, "step": str(step if step is not None else -1)}
    _atomic_write(out / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata=meta))
    config = {
        "format": FORMAT,
        "arch": sae.arch,
        "sae_config": sae.config.to_dict(),
        "train_config": train_config,
        "step": step,
    }
    write_json(out / CONFIG_FILE, config)
    return out


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise SAEDataError(f"{directory} is not an SAE checkpoint: {CONFIG_FILE} is missing")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise SAEDataError(f"{path} has format {config.get('format')!r}; expected {FORMAT!r}")
    return config


def weights_step(directory: str | Path) -> int:
    """The training step stored in sae.safetensors' metadata (-1 when none was given)."""
    from safetensors import safe_open

    with safe_open(str(Path(directory) / WEIGHTS_FILE), framework="pt") as f:
        return int((f.metadata() or {}).get("step", -1))


def load_sae(directory: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """The SAE saved in ``directory`` (architecture, sizes and scale included)."""
    directory = Path(directory)
    config = read_config(directory)
    cls = get_architecture(config["arch"])
    sae = cls(cls.config_class.from_dict(config["sae_config"]))
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise SAEDataError(f"{directory} has {CONFIG_FILE} but no {WEIGHTS_FILE}")
    tensors = load_file(str(weights_path))
    expected = sae.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise SAEDataError(
            f"{weights_path} does not match a {config['arch']} SAE: missing {missing}, "
            f"unexpected {unexpected}"
        )
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise SAEDataError(
                f"{weights_path}: {name} has shape {tuple(t.shape)}, config.json implies "
                f"{tuple(expected[name].shape)}"
            )
    sae.load_state_dict(tensors)
    return sae.to(device)


def save_train_state(directory: str | Path, state: dict[str, Any]) -> None:
    _atomic_write(Path(directory) / TRAIN_STATE_FILE, lambda p: torch.save(state, p))


def load_train_state(directory: str | Path) -> dict[str, Any] | None:
    """The resume state in ``directory``, or None when there is none."""
    path = Path(directory) / TRAIN_STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def save_metrics(directory: str | Path, metrics: dict[str, Any]) -> None:
    write_json(Path(directory) / METRICS_FILE, metrics)


def load_metrics(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
