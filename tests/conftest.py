"""Test-wide settings. Tests never reach the network: model hubs are offline here and in CI,
so huggingface_hub is told so before anything imports it (it reads the flag at import)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
    from bench.encoders.tiny import save_tiny_dinov2

    return str(save_tiny_dinov2(tmp_path_factory.mktemp("enc")))
