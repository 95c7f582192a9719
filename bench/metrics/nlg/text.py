"""Text normalisation shared by BLEU, ROUGE-L and METEOR.

The convention is pycocoevalcap's (`COCOEvalCap` runs it on references and predictions before
every scorer): PTB tokenisation by Stanford CoreNLP 3.4.1 with `-lowerCase`, then tokens that
are pure punctuation are dropped. `normalise_text` does the same in Python:

1. line breaks and other line separators become spaces (one report = one line; pycocoevalcap
   only replaces "\\n", so a "\\r" in its input shifts every later caption by a line);
2. PTB tokenisation (`bench.metrics.nlg.ptb.ptb_tokens`), then lower-casing;
3. tokens in `PUNCTUATION_TOKENS` are dropped: `'' ' `` ` . ? ! , : ; - -- ...` and the
   upper-case bracket escapes. Like pycocoevalcap, the bracket escapes are compared *after*
   lower-casing, so "(" survives as the token "-lrb-" (a quirk of the reference that we keep,
   because the published numbers include it);
4. the kept tokens are joined by single spaces.

The result is a string; each scorer splits it as pycocoevalcap does (BLEU on any whitespace,
ROUGE-L on " "; these differ only for the rare tokens that hold a non-breaking space, such as
the fraction "3 1/2").
"""

from __future__ import annotations

import functools

import regex

from bench.metrics.nlg.ptb import ptb_tokens

# pycocoevalcap's punctuation list, compared against the lower-cased tokens.
PUNCTUATION_TOKENS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
_LINE_BREAKS = regex.compile(r"\r\n|[\r\n\u2028\u2029\u000B\u000C\u0085]")


@functools.lru_cache(maxsize=65536)
def normalise_text(text: str) -> str:
    """Lower-cased PTB tokens without punctuation, joined by spaces (see module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"expected a report string, got {type(text).__name__}")
    one_line = _LINE_BREAKS.sub(" ", text)
    tokens = (tok.lower() for tok in ptb_tokens(one_line))
    return " ".join(tok for tok in tokens if tok not in PUNCTUATION_TOKENS)
