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
