"""Test-wide settings. Tests never reach the network: model hubs are offline here and in CI,
so huggingface_hub is told so before anything imports it (it reads the flag at import)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
