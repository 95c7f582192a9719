"""Errors the SAE library raises for its users.

Each message says what is wrong and how to fix it. The library stands on its own, so these
do not derive from any harness exception; a command line built on the library (``bench sae``)
turns them into its own user-facing errors.
"""

from __future__ import annotations

from typing import Iterable


class SAEError(Exception):
    """A user-facing error: bad options or configs, misuse of the API. Its message is meant
    to be shown without a traceback."""


class SAEDataError(SAEError):
    """Missing or malformed token files, token arrays or checkpoints."""


class UnknownArchitectureError(SAEError):
    """An SAE architecture name that is not registered; the message lists the valid choices."""

    def __init__(self, name: str, choices: Iterable[str]):
        self.name = name
        self.choices = sorted(choices)
        super().__init__(
            f"unknown SAE architecture {name!r}; choose one of: {', '.join(self.choices)}"
        )

    def __reduce__(self) -> tuple[type, tuple[str, list[str]]]:
        # Exception pickling re-calls __init__ with self.args (the message only), which does
        # not match this signature; multiprocessing and pytest-xdist pickle exceptions.
        return type(self), (self.name, self.choices)


__all__ = ["SAEDataError", "SAEError", "UnknownArchitectureError"]
