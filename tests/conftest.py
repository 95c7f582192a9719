"""Test-wide settings. Tests never reach the network: model hubs are offline here and in CI,
so huggingface_hub is told so before anything imports it (it reads the flag at import)."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Test modules import their shared helpers as `helpers.<module>` (tests/helpers/) and
# `llm_server`. pytest's default import mode puts tests/ on sys.path; doing it here as well
# keeps those imports working under --import-mode=importlib. (Not `tests.helpers`: tests/ is
# not a package, and f1chexbert installs an unrelated top-level `tests` package.)
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)


@pytest.fixture
def one_torch_thread():
    """Small matrix products run faster on one thread than on two that contend with other
    processes for the machine's two cores; restored afterwards."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """A tiny random Dinov2 saved like a hub snapshot, for end-to-end runs that need some encoder
    but not a trained one (the encoder's own tests build theirs with other seeds and settings)."""
    from helpers.tiny_dinov2 import save_tiny_dinov2

    return str(save_tiny_dinov2(tmp_path_factory.mktemp("enc")))


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory) -> Path:
    """A phantom MIMIC-CXR-JPG tree of 20 train and 8 test images (64 px): enough for a
    `bench run` of a system that needs no encoder (external commands, the adapters)."""
    from bench.data.phantom import generate

    root = tmp_path_factory.mktemp("small-phantom")
    generate(root, n_train=20, n_test=8, seed=5, image_size=64)
    return root
