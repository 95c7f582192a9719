"""Load a Hugging Face vision backbone and turn images into CLS tokens (docs/method.md, Encoder).

`load_encoder` accepts a local directory (anything written by `save_pretrained`) or a hub id
such as `microsoft/rad-dino`. Hub ids go through `huggingface_hub.snapshot_download`, which
honours HF_HOME (cache location), HF_TOKEN (gated repositories) and HF_HUB_OFFLINE (cache
only); the snapshot is then loaded from disk, so both routes share one code path.

The image processor always comes from the checkpoint: normalisation constants and input size
differ between backbones (Rad-DINO uses its own mean/std and 518 px), so hard-coding them would
silently feed a model inputs it was never trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image

from bench.errors import BenchError, ModelUnavailableError

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "microsoft/rad-dino"
# The small Dinov2 trained on phantom images by scripts/train_phantom_encoder.py, shipped with
# the package so that the phantom pipeline needs no download. `load_encoder("phantom")` finds it.
PHANTOM_ENCODER_DIR = Path(__file__).resolve().parent.parent / "assets" / "phantom-encoder"
PHANTOM_ALIAS = "phantom"

# Files that define what the encoder computes; everything else in a snapshot (README, licence,
# other frameworks' weights) is irrelevant to the tokens and is neither downloaded nor hashed.
_CONFIG_FILES = ("config.json", "preprocessor_config.json")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
# Keys that `save_pretrained` writes but that do not change the computation; dropping them keeps
# the fingerprint stable when the same weights are re-saved by another transformers version.
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "_commit_hash"}


def _transformers_major() -> int:
    return int(transformers.__version__.split(".")[0])


@dataclass
class Encoder:
    """A frozen backbone, its image processor, and where to run it.

    `fingerprint` identifies what the tokens depend on: weights, model config, processor
    config and compute precision (bf16 tokens differ from fp32 ones in the third decimal, so
    they live in a separate cache).
    """

    name: str  # what the user asked for: hub id, path or alias
    path: Path  # the directory the files were loaded from
    model: torch.nn.Module
    processor: Any
    device: torch.device
    dtype: torch.dtype  # compute precision: float32, or bfloat16 via autocast
    dim: int
    fingerprint: str
    weights_fingerprint: str = field(repr=False, default="")

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """Pixel values for a batch, exactly as the checkpoint's processor prepares them.

        Thread-safe and model-free, so that decoding and preprocessing of the next batch can run
        in worker threads while the model is busy with the current one.
        """
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def forward(self, pixel_values: torch.Tensor) -> np.ndarray:
        """CLS tokens (B, dim) as float32 for preprocessed pixel values."""
        x = pixel_values.to(self.device)
        if self.dtype == torch.bfloat16:
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                hidden = self.model(pixel_values=x).last_hidden_state
        else:
            hidden = self.model(pixel_values=x).last_hidden_state
        if hidden.dim() != 3:
            raise BenchError(
                f"encoder {self.name!r} returned last_hidden_state of shape {tuple(hidden.shape)}; "
                "a CLS token needs a ViT-style backbone whose output is (batch, tokens, dim)"
            )
        return hidden[:, 0].float().cpu().numpy()

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        """CLS tokens (B, dim) float32: `last_hidden_state[:, 0]` of the backbone."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.forward(self.preprocess(images))


def load_encoder(
    model: str | Path = DEFAULT_ENCODER,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
) -> Encoder:
    """Load a vision backbone by hub id, local directory, or the alias "phantom".

    device: default "cuda" when available, else "cpu".
    dtype: compute precision; default bfloat16 (autocast) on a GPU that supports it, else
        float32. Weights stay float32 in memory either way.
    revision: a hub branch, tag or commit; ignored for local directories.
    Raises ModelUnavailableError naming the model, what was tried, and how to provide it.
    """
    name = str(model)
    path = _resolve_model_dir(model, revision)
    from bench.devices import check_device

    dev = torch.device(check_device(str(device)) if device is not None else _default_device())
    compute = _resolve_dtype(dtype, dev)

    try:
        net = transformers.AutoModel.from_pretrained(str(path), **_float32_kwargs())
    except (OSError, ValueError, KeyError) as e:
        raise ModelUnavailableError(
            f"could not load encoder {name!r} from {path}: {e}. The directory must hold a "
            "transformers checkpoint (config.json plus model.safetensors or pytorch_model.bin), "
            "as written by save_pretrained."
        ) from e
    # Composite image-text models (CLIP, SigLIP) keep the image tower under `vision_model`;
    # the CLS token of interest is that tower's.
    if hasattr(net, "vision_model") and not hasattr(net.config, "patch_size"):
        net = net.vision_model
    net.eval().to(dev)
    for p in net.parameters():
        p.requires_grad_(False)

    processor = _load_processor(path, name)
    dim = _hidden_size(net)
    weights_fp = fingerprint_model_dir(path)
    fingerprint = hashlib.sha256(f"{weights_fp}|{str(compute).removeprefix('torch.')}".encode()).hexdigest()
    log.info("loaded encoder %s from %s on %s (%s), dim %d, fingerprint %s",
             name, path, dev, compute, dim, fingerprint[:12])
    return Encoder(name=name, path=path, model=net, processor=processor, device=dev,
                   dtype=compute, dim=dim, fingerprint=fingerprint, weights_fingerprint=weights_fp)


def fingerprint_model_dir(path: str | Path) -> str:
    """sha256 over the model config, processor config and weight files of a checkpoint directory.

    Config files are hashed as canonical JSON without version stamps; weights byte for byte. The
    same files give the same fingerprint whether they came from the hub cache or a local copy.
    """
    path = Path(path)
    h = hashlib.sha256()
    for fname in _CONFIG_FILES:
        f = path / fname
        if f.is_file():
            cfg = json.loads(f.read_text())
            for k in _VOLATILE_CONFIG_KEYS:
                cfg.pop(k, None)
            h.update(f"{fname}\n{json.dumps(cfg, sort_keys=True)}\n".encode())
    for f in _weight_files(path):
        h.update(f"{f.name}\n".encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# --- resolution ---------------------------------------------------------------------------


def _weight_files(path: Path) -> list[Path]:
    files = sorted({f for pat in _WEIGHT_PATTERNS for f in path.glob(pat)})
    # A checkpoint with safetensors is loaded from those; a stray .bin beside them is not used.
    st = [f for f in files if f.suffix == ".safetensors"]
    return st or files


def _looks_like_path(model: str | Path) -> bool:
    """A hub id is "name" or "owner/name"; anything else the user typed is meant as a path."""
    if isinstance(model, Path):
        return True
    s = str(model)
    return s.startswith((".", "/", "~")) or s.count("/") > 1 or os.sep != "/" and os.sep in s


def _resolve_model_dir(model: str | Path, revision: str | None) -> Path:
    if str(model) == PHANTOM_ALIAS:
        model = PHANTOM_ENCODER_DIR
    local = Path(model).expanduser()
    if local.is_dir():
        _check_local_dir(local, str(model))
        return local
    if _looks_like_path(model):
        raise ModelUnavailableError(
            f"encoder {str(model)!r}: no such directory ({local.resolve()}). Pass a directory "
            f"written by save_pretrained with --encoder PATH, or a hub id such as {DEFAULT_ENCODER!r}."
        )
    return _download(str(model), revision)


def _check_local_dir(path: Path, name: str) -> None:
    missing = [f for f in ("config.json",) if not (path / f).is_file()]
    if not _weight_files(path):
        missing.append("model.safetensors (or pytorch_model.bin)")
    if not (path / "preprocessor_config.json").is_file():
        missing.append("preprocessor_config.json")
    if missing:
        raise ModelUnavailableError(
            f"encoder {name!r}: directory {path} lacks {', '.join(missing)}. Save both the model "
            "and its image processor there with save_pretrained, or download a full snapshot with "
            f"`hf download {DEFAULT_ENCODER} --local-dir {path}`."
        )


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; ask it rather than the environment.
    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        snap = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=[*_CONFIG_FILES, *_WEIGHT_PATTERNS],
        )
    except Exception as e:  # noqa: BLE001 - the hub raises many types; all mean "not available"
        tried = (
            f"looked for {repo_id!r} (revision {revision or 'main'}) in the Hugging Face cache "
            f"({_hf_cache_dir()})"
            + (" only, because HF_HUB_OFFLINE is set" if offline else " and on the hub")
        )
        remedies = [
            "pass a local directory holding the checkpoint: --encoder PATH",
            f"download it once where the hub is reachable: `hf download {repo_id}` "
            "(then copy the HF cache, or point HF_HOME at it)",
            "for a gated or private repository set HF_TOKEN (or run `hf auth login`)",
        ]
        if offline:
            remedies.append("unset HF_HUB_OFFLINE to allow downloading")
        raise ModelUnavailableError(
            f"encoder {repo_id!r} is not available: {tried}; the hub said: "
            f"{type(e).__name__}: {_first_line(e)}. To fix: "
            + "; ".join(remedies) + "."
        ) from e
    path = Path(snap)
    _check_local_dir(path, repo_id)
    return path


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0].rstrip(".") if lines else ""


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


# --- model pieces -------------------------------------------------------------------------


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, str):
        table = {"float32": torch.float32, "fp32": torch.float32,
                 "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype.lower() not in table:
            raise BenchError(f"unknown encoder dtype {dtype!r}; choose float32 or bfloat16")
        dtype = table[dtype.lower()]
    if dtype not in (torch.float32, torch.bfloat16):
        raise BenchError(f"unsupported encoder dtype {dtype}; choose float32 or bfloat16")
    return dtype


def _float32_kwargs() -> dict:
    # Weights may be stored in fp16 (the phantom encoder is, to stay small); compute precision
    # is chosen by autocast, so the parameters themselves are always held in float32.
    key = "dtype" if _transformers_major() >= 5 else "torch_dtype"
    return {key: torch.float32}


def _load_processor(path: Path, name: str) -> Any:
    # The slow (PIL) processor is what the reference package uses; the fast torchvision one
    # resizes slightly differently, which shifts tokens.
    kwargs = {"backend": "pil"} if _transformers_major() >= 5 else {"use_fast": False}
    try:
        return transformers.AutoImageProcessor.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise ModelUnavailableError(
            f"could not load the image processor of encoder {name!r} from {path}: {e}. "
            "Save it beside the model with processor.save_pretrained(dir)."
        ) from e


def _hidden_size(net: torch.nn.Module) -> int:
    cfg = net.config
    size = getattr(cfg, "hidden_size", None)
    if size is None and hasattr(cfg, "vision_config"):
        size = getattr(cfg.vision_config, "hidden_size", None)
    if size is None:
        raise BenchError(f"cannot tell the token width of {type(net).__name__}: no hidden_size in its config")
    return int(size)
