"""Report text into sentences: the one splitter the harness shares.

SAE-Rad's labeller and composer split reports into statements from these sentences, and
reader studies show readers one sentence per row. A sentence ends at ".", "!" or "?"
followed by white space and a capital letter or a digit (so "1.5 cm" and "e.g. the"
stay whole), or at a blank line; single line breaks inside a paragraph are joined
first, since wrapped report text breaks lines anywhere.
"""

from __future__ import annotations

import re

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9_])|\n\s*\n")
_LINE_BREAK = re.compile(r"[ \t]*\n[ \t]*(?!\n)")


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped, in order; none for empty or blank text."""
    flat = _LINE_BREAK.sub(" ", text.strip())
    return [s.strip() for s in _SENTENCE.split(flat) if s and s.strip()]
