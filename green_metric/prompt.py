"""GREEN's prompt, loaded at run time: never stored in this repository.

GREEN's judge model was fine-tuned on its own prompt, so the exact text matters. It comes
from one of two places:

- the installed `green_score` package (`pip install green-score`): its `make_prompt(reference,
  candidate)` function is found in the package's source and compiled on its own, without
  importing the package (which would import torch.distributed, sentence-transformers and
  more that the prompt does not need);
- a text file the user points to (`--metric-opt green.prompt=FILE`), holding the template with
  the placeholders `{reference}` and `{candidate}` (each at least once; every other brace is
  kept as written).

`GreenPrompt.text(reference, candidate)` is the prompt for one study; `digest` is a short
hash of the template that goes into the metric's signature.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.errors import BenchError, MetricUnavailable


PACKAGE = "green_score"
FUNCTION = "make_prompt"
INSTALL = "pip install green-score (GREEN's package; its prompt is used as it is), or give a prompt file: " \
          "--metric-opt green.prompt=FILE with {reference} and {candidate} in it"
# Two texts that cannot occur in a report, to recover a function's template from its output.
_REF_MARK, _CAND_MARK = "\x00REFERENCE\x00", "\x00CANDIDATE\x00"


@dataclass(frozen=True)
class GreenPrompt:
    template: str  # the prompt with {reference} and {candidate} in place of the reports
    source: str  # where it came from, for manifests: "green_score 0.0.9 (.../utils.py)" or a file path

    def text(self, reference: str, candidate: str) -> str:
        # One pass over the template, so a report that itself holds "{candidate}" stays as written.
        out, rest = [], self.template
        while rest:
            i_r, i_c = rest.find("{reference}"), rest.find("{candidate}")
            hits = [(i, k) for i, k in ((i_r, "{reference}"), (i_c, "{candidate}")) if i >= 0]
            if not hits:
                out.append(rest)
                break
            i, key = min(hits)
            out.append(rest[:i])
            out.append(reference if key == "{reference}" else candidate)
            rest = rest[i + len(key):]
        return "".join(out)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:12]


def load_prompt(path: Path | str | None = None) -> GreenPrompt:
    """The prompt from `path` (a template file) or, when None, from the installed green_score.

    MetricUnavailable when neither is there; a BenchError for a file that is not a template."""
    if path is not None:
        return _from_file(Path(path).expanduser())
    return _from_package()


def _from_file(path: Path) -> GreenPrompt:
    if not path.is_file():
        raise BenchError(f"GREEN prompt file {path} does not exist")
    template = path.read_text()
    missing = [k for k in ("{reference}", "{candidate}") if k not in template]
    if missing:
        raise BenchError(f"GREEN prompt file {path} lacks {' and '.join(missing)}: write them where the reference "
                         "and the candidate report go")
    return GreenPrompt(template, str(path.resolve()))


def _from_package() -> GreenPrompt:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise MetricUnavailable("GREEN's prompt needs the green_score package, which is not installed", INSTALL)
    roots = [Path(r) for r in (spec.submodule_search_locations or [Path(spec.origin).parent])]  # type: ignore[arg-type]
    for root in roots:
        for source in sorted(root.glob("*.py")):
            fn = _compile_function(source, FUNCTION)
            if fn is not None:
                template = _template_of(fn, source)
                return GreenPrompt(template, f"{PACKAGE} {_version()} ({source})")
    raise MetricUnavailable(f"the installed {PACKAGE} ({roots[0]}) has no {FUNCTION}() function; this version "
                            "is not one the metric knows", "install green-score 0.0.x, or give a prompt file: "
                                                           "--metric-opt green.prompt=FILE")


def _compile_function(source: Path, name: str) -> Callable[[str, str], str] | None:
    """The top-level function `name` of `source`, compiled alone (the module is not imported)."""
    try:
        tree = ast.parse(source.read_text(), filename=str(source))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return None
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if node is None:
        return None
    namespace: dict = {}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(source), "exec"), namespace)  # noqa: S102
    return namespace[name]


def _template_of(fn: Callable[[str, str], str], source: Path) -> str:
    try:
        text = fn(_REF_MARK, _CAND_MARK)
    except Exception as e:  # its signature changed, or it needs something not compiled with it
        raise MetricUnavailable(f"{PACKAGE}'s {FUNCTION}() in {source} could not be called: {type(e).__name__}: {e}",
                                "give a prompt file: --metric-opt green.prompt=FILE") from e
    if not isinstance(text, str) or text.count(_REF_MARK) < 1 or text.count(_CAND_MARK) < 1:
        raise MetricUnavailable(f"{PACKAGE}'s {FUNCTION}() in {source} does not place both reports in its prompt",
                                "give a prompt file: --metric-opt green.prompt=FILE")
    if "{reference}" in text or "{candidate}" in text:
        raise MetricUnavailable(f"{PACKAGE}'s prompt itself contains '{{reference}}' or '{{candidate}}'",
                                "give a prompt file: --metric-opt green.prompt=FILE")
    return text.replace(_REF_MARK, "{reference}").replace(_CAND_MARK, "{candidate}")


def _version() -> str:
    from importlib import metadata

    for dist in ("green-score", "green_score"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "(version unknown)"
