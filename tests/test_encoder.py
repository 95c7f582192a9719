"""The encoder loader: CLS tokens, the checkpoint's own processor, fingerprints, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from bench.encoders import fingerprint_model_dir, load_encoder, probe_auroc
from bench.errors import BenchError, ModelUnavailableError
from helpers.tiny_dinov2 import save_tiny_dinov2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_dinov2(tmp_path_factory.mktemp("tiny-dinov2"), seed=0)


def _gray(seed: int, size=(70, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), mode="L")


def test_cls_token_is_first_token_of_last_hidden_state_and_pooler_output(tiny_dir):
    from transformers import BitImageProcessor, Dinov2Model

    enc = load_encoder(tiny_dir, device="cpu")
    images = [_gray(1), _gray(2, (56, 90))]
    tokens = enc.encode(images)
    assert tokens.shape == (2, 32) and tokens.dtype == np.float32

    # The same checkpoint, loaded without our code.
    model = Dinov2Model.from_pretrained(tiny_dir).eval()
    px = BitImageProcessor.from_pretrained(tiny_dir)(images=[im.convert("RGB") for im in images],
                                                     return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values=px)
    np.testing.assert_allclose(tokens, out.last_hidden_state[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tokens, out.pooler_output.numpy(), rtol=1e-5, atol=1e-6)
    # Tokens depend on the image: two different images give different tokens.
    assert not np.allclose(tokens[0], tokens[1])


def test_processor_comes_from_the_checkpoint_not_hard_coded(tmp_path):
    # Unusual mean/std: a hard-coded ImageNet normalisation would not reproduce these numbers.
    d = save_tiny_dinov2(tmp_path / "m", image_mean=(0.2, 0.4, 0.6), image_std=(0.1, 0.2, 0.5))
    enc = load_encoder(d, device="cpu")
    pixels = np.arange(56 * 56, dtype=np.int64).reshape(56, 56) % 256
    im = Image.fromarray(pixels.astype(np.uint8), mode="L")  # already 56x56: resize/crop are no-ops
    px = enc.preprocess([im]).numpy()[0]
    for c, (m, s) in enumerate([(0.2, 0.1), (0.4, 0.2), (0.6, 0.5)]):
        np.testing.assert_allclose(px[c], (pixels / 255.0 - m) / s, atol=1e-5)


def test_fingerprint_is_stable_and_changes_with_weights_and_precision(tiny_dir, tmp_path):
    a, b = load_encoder(tiny_dir, device="cpu"), load_encoder(tiny_dir, device="cpu")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert load_encoder(tiny_dir, device="cpu", dtype="bfloat16").fingerprint != a.fingerprint

    # A copy of the same files, with a different transformers version stamp: same fingerprint.
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tiny_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((copy / "config.json").read_text())
    cfg["transformers_version"] = "0.0.1"
    (copy / "config.json").write_text(json.dumps(cfg))
    assert fingerprint_model_dir(copy) == fingerprint_model_dir(tiny_dir)

    # One weight nudged: a different fingerprint.
    weights = load_file(copy / "model.safetensors")
    key = sorted(weights)[0]
    weights[key] = weights[key] + 1e-3
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert fingerprint_model_dir(copy) != fingerprint_model_dir(tiny_dir)

    # A processor setting changed: a different fingerprint too (tokens would change).
    proc = json.loads((tiny_dir / "preprocessor_config.json").read_text())
    proc["image_mean"] = [0.1, 0.1, 0.1]
    other = tmp_path / "other"
    other.mkdir()
    for f in tiny_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "preprocessor_config.json").write_text(json.dumps(proc))
    assert fingerprint_model_dir(other) != fingerprint_model_dir(tiny_dir)


def test_bfloat16_autocast_tokens_are_close_to_float32(tiny_dir):
    images = [_gray(3), _gray(4)]
    t32 = load_encoder(tiny_dir, device="cpu", dtype="float32").encode(images)
    t16 = load_encoder(tiny_dir, device="cpu", dtype=torch.bfloat16).encode(images)
    assert t16.dtype == np.float32
    # bf16 keeps 8 bits of mantissa: close, not equal.
    assert np.abs(t16 - t32).max() < 0.1
    assert not np.array_equal(t16, t32)


def test_unknown_hub_id_offline_names_model_and_remedies(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder("no-such-owner/no-such-encoder", device="cpu")
    msg = str(err.value)
    for needle in ("no-such-owner/no-such-encoder", str(tmp_path / "hub"), "HF_HUB_OFFLINE",
                   "--encoder PATH", "hf download no-such-owner/no-such-encoder",
                   "HF_TOKEN"):
        assert needle in msg, needle


def test_missing_local_directory_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "rad-dino"
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder(missing)
    assert str(missing) in str(err.value) and "--encoder PATH" in str(err.value)


def test_local_directory_without_processor_config_is_explained(tiny_dir, tmp_path):
    d = tmp_path / "incomplete"
    d.mkdir()
    for name in ("config.json", "model.safetensors"):
        (d / name).write_bytes((tiny_dir / name).read_bytes())
    with pytest.raises(ModelUnavailableError, match="preprocessor_config.json"):
        load_encoder(d)


def test_bad_dtype_is_rejected(tiny_dir):
    with pytest.raises(BenchError, match="float16"):
        load_encoder(tiny_dir, dtype="float16")


def test_probe_auroc_separable_chance_and_single_class():
    rng = np.random.default_rng(0)
    n = 200
    y_tr, y_te = rng.integers(0, 2, n), rng.integers(0, 2, n)
    noise_tr, noise_te = rng.normal(size=(n, 4)), rng.normal(size=(n, 4))
    # Column 0 carries the label with a margin: perfectly separable, AUROC exactly 1.
    x_tr = noise_tr.copy(); x_tr[:, 0] = 3 * y_tr + 0.1 * noise_tr[:, 0]
    x_te = noise_te.copy(); x_te[:, 0] = 3 * y_te + 0.1 * noise_te[:, 0]
    result = probe_auroc(
        x_tr, {"signal": y_tr, "noise": rng.integers(0, 2, n), "absent": np.zeros(n)},
        x_te, {"signal": y_te, "noise": rng.integers(0, 2, n), "absent": np.zeros(n)},
    )
    assert result["signal"] == 1.0
    assert 0.35 < result["noise"] < 0.65  # labels independent of the tokens: chance
    assert math.isnan(result["absent"])
    # The array form names findings by column.
    arr = probe_auroc(x_tr, y_tr[:, None], x_te, y_te[:, None])
    assert arr == {"0": 1.0}


def test_bundled_phantom_encoder_loads_through_the_same_path():
    from transformers import AutoImageProcessor, Dinov2Model

    from bench.encoders import PHANTOM_ENCODER_DIR

    size = sum(f.stat().st_size for f in PHANTOM_ENCODER_DIR.glob("*.safetensors"))
    assert 0 < size <= 8 * 2**20  # "a few MB": small enough to commit
    enc = load_encoder("phantom", device="cpu", dtype="float32")
    assert enc.path == PHANTOM_ENCODER_DIR and enc.model.config.model_type == "dinov2"
    assert enc.dim == enc.model.config.hidden_size
    crop = enc.processor.crop_size
    image = _gray(5, (130, 120))
    tokens = enc.encode([image])
    # The same numbers straight from transformers, with the checkpoint's processor.
    model = Dinov2Model.from_pretrained(PHANTOM_ENCODER_DIR, dtype=torch.float32).eval()
    px = AutoImageProcessor.from_pretrained(PHANTOM_ENCODER_DIR)(images=[image.convert("RGB")],
                                                                return_tensors="pt")["pixel_values"]
    assert tuple(px.shape[-2:]) == (crop["height"], crop["width"])
    with torch.no_grad():
        expected = model(pixel_values=px).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(tokens, expected, rtol=1e-4, atol=1e-5)
