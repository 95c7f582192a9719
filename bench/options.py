"""Options of systems and metrics: one typed model each, validated from command-line strings.

A system or metric declares `Options`, a pydantic model beside its code. Values arrive as
strings (`--opt saerad.tau=0.1`, `--metric-opt radfact.mode=batched`) or from a JSON config
file; `validate_options` turns them into the model, and every mistake is a `BenchError` that
names the owner and, for an unknown key, lists the valid ones.
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from bench.errors import BenchError

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
NONE_WORDS = frozenset({"", "none", "null"})


def parse_bool(what: str, value: Any) -> bool:
    """True/False from a bool or from 1/0, true/false, yes/no, on/off (any case)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise BenchError(f"{what}={value!r}: expected true or false")


class OptionsModel(BaseModel):
    """Base of every options model: unknown keys are errors, "none" means None where allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _none_words(cls, data: Any) -> Any:
        # On a command line there is no None: "none", "null" or an empty value stand for it,
        # for the fields whose type allows it.
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, value in data.items():
            field = cls.model_fields.get(key)
            if field is None or not isinstance(value, str) or value.strip().lower() not in NONE_WORDS:
                continue
            if _allows_none(field.annotation):
                out[key] = None
        return out


class NoOptions(OptionsModel):
    """For systems and metrics that take no options."""


def _allows_none(annotation: Any) -> bool:
    import types
    import typing

    if annotation is None or annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return type(None) in typing.get_args(annotation)
    return False


M = TypeVar("M", bound=OptionsModel)


def validate_options(model: type[M], raw: Mapping[str, Any], owner: str) -> M:
    """`raw` as `model`; a BenchError naming `owner` (e.g. "system saerad") on any mistake."""
    valid = sorted(model.model_fields)
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        listing = ", ".join(valid) if valid else "none (it takes no options)"
        raise BenchError(f"{owner}: unknown option(s) {', '.join(unknown)}; valid options: {listing}")
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(options)"
            got = raw.get(str(err["loc"][0])) if err["loc"] else None
            problems.append(f"{key}={got!r}: {err['msg']}" if got is not None else f"{key}: {err['msg']}")
        raise BenchError(f"{owner}: bad option value(s): " + "; ".join(problems)) from None


def describe_options(model: type[OptionsModel]) -> list[tuple[str, str, str]]:
    """(name, type, default) of each option, for `bench systems` / `bench metrics` listings."""
    out = []
    for name, field in model.model_fields.items():
        kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        default = "required" if field.is_required() else repr(field.default)
        out.append((name, kind, default))
    return out
