"""The system interface: what a report generator must provide to be benchmarked.

A system is constructed from keyword options (strings from the CLI's `--opt key=value`),
optionally fitted on the training split, then asked to generate findings for samples.
Every prediction carries provenance: whatever explains where its text came from (the
neighbour's study id, the active SAE features, the external command, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Sequence

from bench.data.records import Sample

if TYPE_CHECKING:
    from bench.context import RunContext


@dataclass
class Prediction:
    id: str
    prediction: str
    reference: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "reference": self.reference, "prediction": self.prediction,
                "provenance": self.provenance}


class System(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs_train: ClassVar[bool] = False  # fit() reads the training split

    def __init__(self, **options: Any):
        if options:
            raise TypeError(f"system {self.name!r} takes no options, got {sorted(options)}")

    def fit(self, ctx: "RunContext") -> None:
        """Learn from the training split (ctx.dataset("train")). Default: nothing to learn."""

    @abstractmethod
    def generate(self, samples: Sequence[Sample], ctx: "RunContext") -> Iterator[Prediction]:
        """Yield one Prediction per sample, in order. May batch internally."""

    def config(self) -> dict[str, Any]:
        """Everything that determines this system's output, for the run manifest."""
        return {"name": self.name}
