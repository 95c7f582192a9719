"""Turning a device name from the command line into a torch device, with a clear error."""

from __future__ import annotations

from bench.errors import BenchError


def check_device(name: str | None) -> str:
    """`name` if torch can use it here; a BenchError saying what was found otherwise.

    None and "auto" mean cuda when present, else cpu."""
    import torch

    if name is None or str(name).lower() == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise BenchError(f"device {name!r} is not a device name ({exc}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"this torch build ({torch.__version__}) has no CUDA" if torch.version.cuda is None else \
                f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU"
            raise BenchError(f"device {name!r} asked for, but {build}; use --device cpu or run on a GPU machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BenchError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise BenchError(f"device {name!r} asked for, but MPS is not available here")
    return str(dev)
