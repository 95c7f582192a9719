"""Reading JSON files that users give or tools write, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.errors import DataError


def read_json(path: str | Path, what: str, expect: type | None = None) -> Any:
    """The parsed content of `path`; a DataError naming `what` and the path if it is missing,
    not JSON, or (with `expect`) not of that type, e.g. dict."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what} {p} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {p} is not valid JSON ({exc})") from None
    if expect is not None and not isinstance(data, expect):
        kind = "a JSON object" if expect is dict else f"JSON {expect.__name__}"
        raise DataError(f"{what} {p} must hold {kind}, not {type(data).__name__}")
    return data
