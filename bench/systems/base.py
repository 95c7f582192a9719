"""The system interface: what a report generator must provide to be benchmarked.

A system is built from its options (one pydantic model, `Options`, beside its code; values
arrive as strings from `--opt NAME.key=value`), optionally fitted on the training split
(which it sees whole, findings included), then asked to generate findings for test
*queries*: image, view, indication and prior reports, never the reference findings. It
yields one `Prediction` per query: the sample id, the findings text, and provenance
(whatever explains where the text came from: the neighbour's study id, the active SAE
features, the external command, ...). References are joined by the scorer, from the
dataset, by id.

A system whose documented purpose is to echo the reference (the `reference` sanity check)
declares `reads_test_findings = True` and asks the context for them explicitly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping, Sequence

from bench.data.records import Query
from bench.options import NoOptions, OptionsModel, validate_options

if TYPE_CHECKING:
    from bench.context import RunContext


@dataclass
class Prediction:
    id: str
    findings: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "prediction": self.findings, "provenance": self.provenance}


class System(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs_train: ClassVar[bool] = False  # fit() reads the training split
    reads_test_findings: ClassVar[bool] = False  # only sanity systems such as `reference`
    Options: ClassVar[type[OptionsModel]] = NoOptions
    # A pinned requirements file, for a system that runs in its own virtual environment
    # (`bench env create NAME` builds it; bench/systems/environments.py).
    requirements: ClassVar[Path | None] = None
    # The option that takes an LLM spec (docs/llm.md) and the name the system asks under in an
    # endpoint file's [uses] table (None: its registry name); `--endpoints FILE` fills the option
    # for a use the file names. Declared here so that core bench never imports the plug-in.
    llm_option: ClassVar[str | None] = None
    llm_use: ClassVar[str | None] = None

    def __init__(self, options: OptionsModel | None = None):
        self.options = options if options is not None else self.Options()

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> "System":
        return cls(validate_options(cls.Options, options or {}, f"system {cls.name}"))

    def fit(self, ctx: "RunContext") -> None:
        """Learn from the training split (ctx.dataset("train")). Default: nothing to learn."""

    @abstractmethod
    def generate(self, queries: Sequence[Query], ctx: "RunContext") -> Iterator[Prediction]:
        """Yield one Prediction per query, in order. May batch internally."""

    def close(self) -> None:
        """Release what generation held (LLM clients and the servers they started, subprocesses),
        so that the scorers after it find the port and the GPU free. Called once generation
        stops, also after an error. Default: nothing held."""

    def config(self) -> dict[str, Any]:
        """Everything that determines this system's output, for the run manifest."""
        return {"name": self.name, "options": self.options.model_dump(mode="json")}
