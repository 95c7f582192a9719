"""`chexagent` and `maira2`: the field's systems, each run by its adapter script in its own
environment (`bench env create chexagent`, `bench env create maira2`) through the ReXrank
contract, watched by the external runner (time limits, resume, ids reported by id).

Weights come from the model's hub id through the Hugging Face cache, or from a local
directory: `--opt chexagent.model=DIR` or $SAERAD_CHEXAGENT_PATH (MAIRA-2:
$SAERAD_MAIRA2_PATH). Without them, or without a GPU on `--opt NAME.device=cuda` (the
default), the run stops with one line saying what is missing and how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from baselines.external import ExternalSystem, RunnerOptions
from bench.systems.environments import Environments

ADAPTERS = Path(__file__).resolve().parent


class AdapterOptions(RunnerOptions):
    env: str | None = Field(None, description="the environment to run in (default: the system's name)")
    model: str | None = Field(None, description="weights: a local directory or a hub id (default: $SAERAD_<NAME>_PATH, "
                              "else the model's hub id)")
    device: str = Field("cuda", description="cuda, cuda:N, or cpu (very slow)")
    # A report takes seconds on a GPU; five minutes per sample only catches a hung command.
    sample_timeout: float = Field(300, ge=0, description=RunnerOptions.model_fields["sample_timeout"].description)


class _AdapterSystem(ExternalSystem):
    adapter: ClassVar[str]  # the directory under baselines/adapters/
    hub_id: ClassVar[str]
    weights_env: ClassVar[str]

    def __init__(self, options: AdapterOptions):
        self._model = options.model or os.environ.get(self.weights_env) or self.hub_id
        super().__init__(options)

    def env_name(self) -> str | None:
        return self.options.env or self.name

    def command(self) -> list[str]:
        opts = self.options
        argv = [self.environment.python, str(ADAPTERS / self.adapter / "infer.py"), "--model", self._model,
                "--device", opts.device, "--dtype", opts.dtype, "--batch-size", str(opts.batch_size),
                "--max-new-tokens", str(opts.max_new_tokens)]
        return argv + self.extra_args()

    def extra_args(self) -> list[str]:
        return []

    def config(self) -> dict:
        return {**super().config(), "model": self._model}


class CheXagentSystem(_AdapterSystem):
    name = "chexagent"
    description = ("CheXagent-2-3b (StanfordAIMI) in its own environment (bench env create chexagent): "
                   "findings prompt with the indication, greedy, up to 512 new tokens")
    adapter = "chexagent"
    hub_id = "StanfordAIMI/CheXagent-2-3b"
    weights_env = "SAERAD_CHEXAGENT_PATH"
    requirements = ADAPTERS / "chexagent" / "requirements.txt"

    class Options(AdapterOptions):
        dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="as its model card")
        max_new_tokens: int = Field(512, ge=1, description="as its model card")


class Maira2System(_AdapterSystem):
    name = "maira2"
    description = ("MAIRA-2 (microsoft/maira-2, gated) in its own environment (bench env create maira2): frontal, "
                   "lateral when present, prior image and report, indication/technique/comparison; no grounding")
    adapter = "maira2"
    hub_id = "microsoft/maira-2"
    weights_env = "SAERAD_MAIRA2_PATH"
    requirements = ADAPTERS / "maira2" / "requirements.txt"

    class Options(AdapterOptions):
        dtype: Literal["bfloat16", "float16", "float32"] = Field("float32", description="as its model card")
        max_new_tokens: int = Field(300, ge=1, description="as its model card (findings, no grounding)")
        lateral: Literal["auto", "off", "require"] = Field("auto", description="auto: the study's lateral image when "
                                                           "it has one; require: a study without one is an error")

    def extra_args(self) -> list[str]:
        return ["--lateral", self.options.lateral]
