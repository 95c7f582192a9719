"""A Python re-creation of the PTB-style tokeniser that pycocoevalcap runs in Java.

pycocoevalcap's `PTBTokenizer` pipes captions through Stanford CoreNLP 3.4.1's
`edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase` (default options, i.e.
PTB3 escaping). This module reproduces that tokeniser's *observable behaviour* on
report-like English text without Java, so that BLEU and ROUGE-L need no JVM.

How it works: like the original lexer, it scans left to right and at each position picks the
longest match among a list of token patterns (ties go to the pattern listed first). Some
patterns look ahead at what follows (e.g. an abbreviation followed by a capitalised word); the
look-ahead counts towards the match length, as in JFlex, but is not consumed. A pattern's
action may emit a shortened token and leave the rest for the next scan (e.g. "etc." then ".").

Covered (checked against the jar, see tests/test_nlg_metrics.py and docs/metrics-nlg.md):
words with internal periods ("cardiomegaly.no"), hyphen/underscore compounds ("right-sided",
"t11-t12"), slash compounds of up to three parts ("w/o", "effusion/pneumothorax"), numbers
("5.2", "10:30", "1,000", "-5"), dates ("1/2/2150"), fractions ("3 1/2" joined by a
non-breaking space), clitics ("patient 's", "do n't"), the PTB abbreviation and acronym rules
for a final period, brackets as -LRB- etc., quotes as `` '' ` ', dashes, ellipses, runs of
"_" / "@" / "#" / "*", and single symbols.
Not covered (rare in reports; the tokens come out differently): bare web addresses
without "http", SGML tags with attributes, phone numbers in unusual layouts, emoticons other than the
simple ones, Twitter names, and the case where the text *after* a report (the next line in
pycocoevalcap's batch file) changes how its last period is split (see docs/metrics-nlg.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import regex

# ---------------------------------------------------------------- character classes
_LETTER = r"[\p{L}\p{M}\u00AD]"
_DIGIT = r"\p{Nd}"
_ALNUM = r"[\p{L}\p{Nd}]"
_SPACE = r"[ \t\u00A0\u2000-\u200A\u3000]"
_NEWLINE = r"(?:\r\n|[\r\n\u2028\u2029\u000B\u000C\u0085])"
_SPACENL = rf"(?:{_SPACE}|{_NEWLINE})"
_APOS = r"(?:['\u0092\u2019]|&apos;)"
_APOS_ANY = rf"(?:{_APOS}|[`\u0091\u2018\u201B])"  # apostrophe-like marks seen inside words
_HYPHEN = r"[-_\u058A\u2010\u2011]"
_UPPER = r"(?-i:\p{Lu})"  # JFlex's %caseless does not reach character classes

_NUM = rf"(?:{_DIGIT}+|{_DIGIT}*(?:[.:,\u00AD\u066B\u066C]{_DIGIT}+)+)"
_WORD = rf"{_LETTER}(?:{_LETTER}|{_DIGIT})*(?:[.!?]{_LETTER}(?:{_LETTER}|{_DIGIT})*)*"
_ACRO = r"[A-Za-z](?:\.[A-Za-z])*"
_ACRO2 = r"[A-Za-z](?:\.[A-Za-z])+"
_SGML = (
    r"<(?:[!?][A-Za-z-][^>\r\n]*"
    r"|[A-Za-z][A-Za-z0-9_:.-]*(?: +[A-Za-z][A-Za-z0-9_:.-]*(?: *= *(?:'[^']*'|\"[^\"]*\"))?)* */?"
    r"|/[A-Za-z][A-Za-z0-9_:.-]*) *>"
)
_SENTEND = rf"{_SPACENL}(?:{_SPACENL}|{_UPPER}|{_SGML})"

# Abbreviation lists of the PTB rules. Group 1 keeps its period and, before a sentence break,
# also yields a separate "." token; group 2 keeps its period always; group 3 only before a digit.
_ABBR1 = (
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|thu|thurs|fri|"
    "ala|ariz|(?-i:A)z|(?-i:A)rk|calif|colo|conn|ct|dak|(?-i:D)el|fla|ga|(?-i:I)ll|ind|kans?|ky|"
    "(?-i:L)a|(?-i:M)ass|md|mich|minn|(?-i:M)iss|mo|mont|neb|nev|okla|(?-i:O)re|(?-i:P)a|penn|"
    "tenn|(?-i:T)ex|va|vt|(?-i:W)ash|wisc?|wyo|"
    "inc|cos?|corp|pp?t[ye]s?|ltd|plc|rt|bancorp|bhd|assn|univ|intl|sys|tel|est|ext|sq|"
    r"jr|sr|bros|(?:ed|ph)\.d|blvd|rd|esq|etc|al|seq|bldg"
)
_ABBR2_WORDS = (
    "mr|mrs|ms|(?-i:M)iss|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|"
    "cpl|pvt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|mt|ft|adj|adv|asst|"
    r"assoc|ens|insp|mlle|mme|msgr|sfc|vs|alex|wm|jos|cie|a\.k\.a|cf|treas|ph|invt|elec|natl|"
    "m[ft]g|dept"
)
_ABBR4 = rf"(?:{_ABBR2_WORDS}|{_ACRO})"
_ABBR3 = r"(?:ca|figs?|prop|nos?|art|bldg|pp|op)\."
# Capitalised words after which an acronym's period is taken to end the sentence.
_SENT_STARTERS = (
    "About|According|Additionally|After|An|A|As|At|But|Earlier|He|Her|Here|However|If|In|It|"
    "Last|Many|More|Mr\\.|Ms\\.|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Their|"
    "Then|There|These|They|This|We|When|While|What|Yet|You"
)
_SENT_STARTERS_RE = "|".join(f"(?-i:{w[0]}){w[1:]}" for w in _SENT_STARTERS.split("|"))

_MISC_SYMBOL = (
    r"[+%&~\^|\\\u00A6\u00A7\u00A8\u00A9\u00AC\u00AE\u00AF\u00B0-\u00BA\u00D7\u00F7\u2016\u2017"
    r"\u2020-\u2023\u2030-\u2038\u203B\u203E-\u2042\u2044\u207A-\u207F\u208A-\u208E\u2100-\u214F"
    r"\u2190-\u21FF\u2200-\u2BFF]"
)


@dataclass(frozen=True)
class _Rule:
    """One token pattern. `pattern` has a group `tok`; anything matched after it is look-ahead."""

    name: str
    pattern: regex.Pattern
    # Given the token text, return (text to emit or None to skip, characters to consume).
    action: Callable[[str], tuple[str | None, int]]


def _keep(tok: str) -> tuple[str, int]:
    return tok, len(tok)


def _skip(tok: str) -> tuple[None, int]:
    return None, len(tok)


def _emit_then_period(tok: str) -> tuple[str, int]:
    """The abbreviation with its period, and the period once more as the next token."""
    return tok, len(tok) - 1


def _acronym_at_sentence_end(tok: str) -> tuple[str, int]:
    if len(tok) == 2:  # a single letter: "I." -> "I" "."
        return tok[0], 1
    return tok, len(tok) - 1


def _split_after(n: int) -> Callable[[str], tuple[str, int]]:
    return lambda tok: (tok[:n], n)


def _replace(text: str) -> Callable[[str], tuple[str, int]]:
    return lambda tok: (text, len(tok))


def _nbsp(tok: str) -> tuple[str, int]:
    # Tokens that may contain a space keep it as a non-breaking space, so lines stay splittable.
    return tok.replace(" ", "\u00a0"), len(tok)


def _dashes(tok: str) -> tuple[str, int]:
    return ("--" if 3 <= len(tok) <= 4 else tok), len(tok)


_LEFT_QUOTE = regex.compile(r"&apos;|'")
_LEFT_DQUOTE = regex.compile(r"\"|&quot;")


def _latex_quotes(tok: str, left: bool) -> str:
    if left:
        tok = _LEFT_QUOTE.sub("`", tok)
        tok = _LEFT_DQUOTE.sub("``", tok)
    else:
        tok = _LEFT_QUOTE.sub("'", tok)
        tok = _LEFT_DQUOTE.sub("''", tok)
    tok = regex.sub(r"[\u0091\u2018\u201B\u2039]", "`", tok)
    tok = regex.sub(r"[\u0092\u2019\u203A]", "'", tok)
    tok = regex.sub(r"[\u0093\u201C\u00AB]", "``", tok)
    return regex.sub(r"[\u0094\u201D\u00BB]", "''", tok)


def _quote(left: bool) -> Callable[[str], tuple[str, int]]:
    return lambda tok: (_latex_quotes(tok, left), len(tok))


def _fraction_char(tok: str) -> tuple[str, int]:
    table = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
    return table.get(tok, tok), len(tok)


def _currency(tok: str) -> tuple[str, int]:
    # PTB3 spells cents out, uses "#" for the pound and "$" for euro-like signs.
    table = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
    return table.get(tok, tok), len(tok)


def _drop_soft_hyphens(tok: str) -> tuple[str, int]:
    return (tok.replace("\u00ad", "") or "-"), len(tok)


def _rule(name: str, tok: str, action=_keep, after: str = "") -> _Rule:
    # POSIX mode makes the regex engine return the longest match, as a JFlex DFA does.
    src = f"(?p)(?P<tok>{tok})" + (f"(?:{after})" if after else "")
    return _Rule(name, regex.compile(src, regex.IGNORECASE | regex.V0), action)


# In priority order: on equal match length the earlier rule wins.
_RULES: tuple[_Rule, ...] = (
    _rule("assimilation", "cannot", _split_after(3)),
    _rule("twas", "'twas", _split_after(2)),
    _rule("tis", "'tis", _split_after(2)),
    _rule("gonna", "gonna|gotta|lemme|gimme|wanna", _split_after(3)),
    _rule("sgml", _SGML, _nbsp),
    _rule("mdash", r"&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", _replace("--")),
    _rule("amp", "&amp;", _replace("&")),
    _rule("entity", r"&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);"),
    _rule("url", r"https?://[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},-]"),
    _rule("email", r"(?:&lt;|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00A0]+\.)*"
          r"[^ \t\n\f\r\"<>|(){}.\u00A0]+(?:&gt;|>)?"),
    _rule("word_before_clitic", _WORD, _drop_soft_hyphens, after=rf"{_APOS}(?:[msd]|re|ve|ll)"),
    _rule("word_before_nt", r"[A-Za-z\u00AD]*(?-i:[A-MO-Za-mo-z])\u00AD*", _drop_soft_hyphens,
          after=rf"n{_APOS_ANY}t"),
    _rule("word", _WORD, _drop_soft_hyphens),
    _rule("apostrophe_word",
          rf"{_APOS}n{_APOS}?|[lLdDjJ]{_APOS}|dunkin{_APOS}|somethin{_APOS}|ol{_APOS}|{_APOS}em"
          rf"|(?-i:[A-HJ-XZn]){_APOS_ANY}\p{{L}}{{2}}\p{{L}}*|{_APOS}[2-9]0s|{_APOS}till?"
          rf"|\p{{L}}+(?-i:[aeiouyAEIOUY]){_APOS_ANY}(?-i:[aeiouA-Z])\p{{L}}*|{_APOS}cause"
          r"|cont'd\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l|O" + _APOS_ANY + "o"),
    _rule("y_apostrophe", rf"y{_APOS}", after=r"\p{L}"),
    _rule("clitic", rf"{_APOS}(?:[msd]|re|ve|ll)", _quote(False), after="[^A-Za-z]"),
    _rule("nt", rf"n{_APOS_ANY}t", _quote(False), after="[^A-Za-z]"),
    _rule("date", rf"{_DIGIT}{{1,2}}[-/]{_DIGIT}{{1,2}}[-/]{_DIGIT}{{2,4}}"),
    _rule("number", rf"[-+]?{_NUM}", _drop_soft_hyphens),
    _rule("sub_sup_number", r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)"),
    _rule("fraction", rf"(?:{_DIGIT}{{1,4}}[- \u00A0])?{_DIGIT}{{1,4}}(?:\\?/|\u2044){_DIGIT}{{1,4}}", _nbsp),
    _rule("fraction_char", r"[\u00BC\u00BD\u00BE\u2153-\u215E]", _fraction_char),
    _rule("ptb_special", r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|pro-|anti-|S(?:&|&amp;)P-500"
          rf"|S(?:&|&amp;)Ls|Cap{_APOS}n|c{_APOS}est"),
    _rule("slash_compound", r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"),
    _rule("currency", r"(?-i:[A-Z])*\$|#"),
    _rule("currency_sign", r"[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]",
          _currency),
    _rule("acronym_sentence_end", rf"{_ACRO}\.", _acronym_at_sentence_end,
          after=rf"{_SPACENL}+(?:{_SENT_STARTERS_RE}|{_SGML}){_SPACENL}"),
    _rule("abbrev_before_number", _ABBR3, after=rf"{_SPACENL}?\p{{Nd}}"),
    _rule("pty_ltd", r"(?:pt[ey]|co)\.", after=rf"{_SPACE}(?:ltd|lim)"),
    _rule("abbrev1_sentence_end", rf"(?:{_ABBR1})\.", _emit_then_period, after=_SENTEND),
    _rule("abbrev1_midsentence", rf"(?:{_ABBR1})\.", after=r"[\s\S][\s\S]"),
    _rule("abbrev1_text_end", rf"(?:{_ABBR1})\.", _emit_then_period),
    _rule("abbrev2", rf"{_ABBR4}\."),
    _rule("abbrev4_word", _ABBR4, after=_SPACE),
    _rule("acronym", _ACRO, after=_SPACENL),
    _rule("year_apostrophe", rf"{_APOS}[0-9][0-9]", after=_SPACENL),
    _rule("word_period_comma", rf"{_WORD}\.", _drop_soft_hyphens, after="[,;:\u3001]"),
    _rule("phone", r"(?:\([0-9]{2,3}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{2,4}[- \u00A0])?[0-9]{2,4}[- \u00A0])"
          r"[0-9]{3,4}[- \u00A0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}",
          lambda tok: (tok.replace(" ", "\u00a0").replace("(", "-LRB-").replace(")", "-RRB-"), len(tok))),
    _rule("open_dquote", r"\"|&quot;", _quote(True), after=r"[A-Za-z0-9$]"),
    _rule("dquote", r"\"|&quot;", _quote(False)),
    _rule("less_than", r"<|&lt;", _replace("<")),
    _rule("greater_than", r">|&gt;", _replace(">")),
    _rule("smiley", r"[<>]?[:;=][\-o*']?(?-i:[()DPdpO\\{@|\[\]])",
          lambda tok: (tok.replace("(", "-LRB-").replace(")", "-RRB-"), len(tok)), after="[^A-Za-z0-9]"),
    _rule("lbrace", r"\{", _replace("-LCB-")),
    _rule("rbrace", r"\}", _replace("-RCB-")),
    _rule("lbracket", r"\[", _replace("-LSB-")),
    _rule("rbracket", r"\]", _replace("-RSB-")),
    _rule("lparen", r"\(", _replace("-LRB-")),
    _rule("rparen", r"\)", _replace("-RRB-")),
    _rule("hyphens", r"-+", _dashes),
    _rule("ellipsis", r"\.{3,5}|(?:\.[ \u00A0]){2,4}\.|[\u0085\u2026]", _replace("...")),
    _rule("marks", r"@+|#+|_+"),
    _rule("asterisks", r"\*+|(?:\\\*){1,3}"),
    _rule("in_sentence_punct", r"[,;:\u3001]"),
    _rule("final_punct", r"[?!]+"),
    _rule("period", r"[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]"),
    _rule("equals", "="),
    _rule("slash", "/"),
    _rule("hyphenated_period_comma", rf"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|{_ACRO2}\.))+\.",
          _drop_soft_hyphens, after="[,;:\u3001]"),
    _rule("hyphenated", rf"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|{_ACRO2}\.))+", _drop_soft_hyphens),
    _rule("compound_period_comma",
          rf"(?:[dDoOlL]{_APOS_ANY}{_ALNUM})?{_ALNUM}+(?:{_HYPHEN}(?:[dDoOlL]{_APOS_ANY}{_ALNUM})?{_ALNUM}+)*\.",
          after="[,;:\u3001]"),
    _rule("compound", rf"(?:[dDoOlL]{_APOS_ANY}{_ALNUM})?{_ALNUM}+(?:{_HYPHEN}(?:[dDoOlL]{_APOS_ANY}{_ALNUM})?{_ALNUM}+)*"),
    _rule("caps_ampersand_period_comma", r"(?-i:[A-Z])+(?:(?:[+&]|&amp;)(?-i:[A-Z])+)+\.",
          lambda tok: (tok.replace("&amp;", "&"), len(tok)), after="[,;:\u3001]"),
    _rule("caps_ampersand", r"(?-i:[A-Z])+(?:(?:[+&]|&amp;)(?-i:[A-Z])+)+",
          lambda tok: (tok.replace("&amp;", "&"), len(tok))),
    _rule("open_squote", "'", _quote(True), after=r"[A-Za-z][^ \t\n\r\u00A0]"),
    _rule("clitic_text_end", rf"{_APOS}(?:[msd]|re|ve|ll)", _quote(False)),
    _rule("nt_text_end", rf"n{_APOS_ANY}t", _quote(False)),
    _rule("quotes", rf"{_APOS}|''|[`\u2018\u2019\u201A\u201B\u201C\u201D\u0091\u0092\u0093\u0094\u201E\u201F\u2039\u203A\u00AB\u00BB]{{1,2}}",
          _quote(False)),
    _rule("duck_feet", "<<|>>"),
    _rule("symbol", _MISC_SYMBOL),
    _rule("space", rf"\x00|{_SPACE}+|[\u200B\u200E\u200F\uFEFF]|&nbsp;|{_NEWLINE}", _skip),
)

# Speed-ups (the scan above is the specification; these only skip work that cannot matter):
# 1. Most tokens in a report are plain words followed by a space; no other rule can beat them
#    then (except the assimilation rules above), so they skip the rule scan. Spaces likewise.
_PLAIN_WORD = regex.compile(r"[A-Za-z]+(?=[ \t]|$)")
_SPACES = regex.compile(r"[ \t]+")
_ASSIMILATIONS = {"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"}


def _rules_starting_with(char: str) -> tuple[_Rule, ...]:
    # A partial match says whether some text starting with `char` could match the rule.
    return tuple(rule for rule in _RULES if rule.pattern.match(char, partial=True))


# 2. For ASCII characters, only the rules that can start with that character are tried.
_RULES_BY_FIRST_CHAR: dict[str, tuple[_Rule, ...]] = {chr(c): _rules_starting_with(chr(c)) for c in range(128)}


def ptb_tokens(text: str) -> list[str]:
    """Tokenise one line of text the way CoreNLP 3.4.1's PTBTokenizer does (case preserved)."""
    tokens: list[str] = []
    # pycocoevalcap writes one caption per line, so the Java lexer sees a line break after each
    # text; some look-ahead rules (e.g. an emoticon) depend on it.
    text = text + "\n"
    pos, end = 0, len(text)
    while pos < end:
        fast = _PLAIN_WORD.match(text, pos)
        if fast and fast.group().lower() not in _ASSIMILATIONS:
            tokens.append(fast.group())
            pos = fast.end()
            continue
        spaces = _SPACES.match(text, pos)
        if spaces:
            pos = spaces.end()
            continue
        best: tuple[int, _Rule, str] | None = None
        for rule in _RULES_BY_FIRST_CHAR.get(text[pos], _RULES):
            m = rule.pattern.match(text, pos)
            if m and m.end() > pos and (best is None or m.end() - pos > best[0]):
                best = (m.end() - pos, rule, m.group("tok"))
        if best is None:
            # Characters no rule knows are dropped, as the Java tokeniser does by default.
            pos += 1
            continue
        emitted, consumed = best[1].action(best[2])
        if emitted is not None:
            tokens.append(emitted)
        pos += consumed
    return tokens
