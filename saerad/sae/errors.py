"""Errors the SAE library raises for its users.

Each message says what is wrong and how to fix it. The library stands on its own, so these
do not derive from any harness exception; a command line built on the library (``bench sae``)
turns them into its own user-facing errors.
"""

from __future__ import annotations

from typing import Any, Iterable


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


class TargetL0Error(SAEError):
    """A target L0 (mean active features per token) that the lambda search cannot reach.

    ``closest_l0`` and ``closest_l1_coeff`` are the best trial found (None when the target
    was rejected before any trial); ``trials`` lists every (lambda, L0) tried.
    """

    def __init__(self, message: str, target: float, closest_l0: float | None = None,
                 closest_l1_coeff: float | None = None,
                 trials: list[dict[str, float]] | None = None):
        super().__init__(message)
        self.target = target
        self.closest_l0 = closest_l0
        self.closest_l1_coeff = closest_l1_coeff
        self.trials = list(trials or [])

    def __reduce__(self) -> tuple[Any, ...]:
        # As above: default pickling would re-call __init__ with the message only.
        return type(self), (str(self), self.target, self.closest_l0, self.closest_l1_coeff,
                            self.trials)


__all__ = ["SAEDataError", "SAEError", "TargetL0Error", "UnknownArchitectureError"]
