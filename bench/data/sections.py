"""Split a MIMIC-CXR free-text report into named sections.

This follows the behaviour of the official MIMIC-CXR section logic (MIT-LCP/mimic-cxr,
`txt/section_parser.py` and `txt/create_section_files.py`), re-implemented here:

Headings
    A heading is a run of upper-case letters, spaces and the characters ``( ) / , -`` at the
    start of a line (after optional indentation), followed by a colon and then whitespace or
    the end of the text: ``FINDINGS:``, ``FINDINGS AND IMPRESSION:``, ``CHEST (PA AND LAT):``.
    Lower-case or mixed-case words with a colon (``Findings:``, ``compared to: ...``), colons
    in the middle of a line and times such as ``3:41 PM`` are never headings. A section runs
    from just after its heading's colon to the next heading; text before the first heading
    is the ``preamble``; a report with no heading at all is one section, ``full report``.

Name normalisation (lower-cased, stripped, then the first rule that applies)
    1. A table of known spellings (the official parser's list of frequent headings and
       typos), e.g. ``findings and impression``, ``findings/impression``, ``conclusion``,
       ``impresson`` -> ``impression``; ``finding``, ``findngs``, ``chest, two views``
       -> ``findings``; ``reason for exam``, ``reason for examination``,
       ``clinical indication``, ``idication`` -> ``indication``; ``clinical history``,
       ``clinical information``, ``patient history``, ``pfi`` -> ``history``;
       ``comparisons``, ``comparison exam``, ``reference exam`` -> ``comparison``;
       ``wetread`` -> ``wet read``; ``exam``, ``type of examination`` -> ``examination``.
    2. A name containing ``impression``, ``findings``, ``history``, ``comparison`` or
       ``addendum`` (checked in that order) becomes that word.
    3. A name describing the views taken (``chest``, ``portable``, ``pa and lateral``,
       ``two views``, ``frontal view``, ...) becomes ``findings``: radiologists sometimes
       title the findings by the examination.
    4. Otherwise the lower-cased name is kept.
    One deliberate difference: the official table maps the typo ``ndication`` to
    ``impression``; we map it to ``indication``, which is evidently what was meant.

Indication
    The official parser keeps ``indication`` and ``history`` apart; `extract_indication`
    returns the indication and falls back to the history when there is no indication.

Which section wins
    Sections with no text are dropped (the official code drops empty findings and
    impression sections, which handles ``FINDINGS:`` directly followed by ``IMPRESSION:``
    and report titles that look like headings; we drop every empty section). Of several
    sections with the same name the last one wins (addenda and corrected reports repeat
    headings).

Last paragraph
    When a report has neither findings nor impression, the official code splits its last
    section at the first blank line and calls everything after it ``last_paragraph``
    (many short reports are a title line, a blank line and the findings). We do the same
    with the last section that has any text; if it has no blank line, or nothing follows
    it, there is no last paragraph.

Cleaning
    Each section's text has report banners removed (lines holding only ``FINAL REPORT``,
    ``FINAL ADDENDUM``, ``ADDENDUM`` or ``PRELIMINARY REPORT``, and separator lines of ten or
    more underscores), then runs of whitespace collapsed to one space, then is stripped.
    De-identification placeholders (``___``) are kept.
"""

from __future__ import annotations

import re

# A heading: indentation, upper-case heading characters starting with a letter, a colon,
# then whitespace or the end of the text. Digits and "." are not heading characters, so
# "AT 3:41 PM" and "DR. SMITH:" never match.
_HEADING = re.compile(r"^[ \t]*([A-Z][A-Z ()/,-]*):(?=\s|$)", re.MULTILINE)

# Report banners and separators: structure, not content.
_BANNER = re.compile(
    r"^[ \t]*(?:FINAL REPORT|FINAL ADDENDUM|ADDENDUM|PRELIMINARY REPORT|_{10,})[ \t]*$",
    re.MULTILINE,
)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_WHITESPACE = re.compile(r"\s+")

_KNOWN_NAMES: dict[str, str] = {
    # impression
    "conclusion": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings/ impression": "impression",
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    # findings
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "reference findings": "findings",
    "chest, two views": "findings",
    # indication
    "reason for examination": "indication",
    "reason for exam": "indication",
    "clinical indication": "indication",
    "idication": "indication",
    "ndication": "indication",  # the official table says "impression"; see module docstring
    # history
    "clinical history": "history",
    "clinical information": "history",
    "patient history": "history",
    "pfi": "history",
    # comparison
    "comparisons": "comparison",
    "comparison exam": "comparison",
    "comparison film": "comparison",
    "reference exam": "comparison",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
    # others
    "exam": "examination",
    "type of examination": "examination",
    "recommendation": "recommendations",
    "recommendation(s)": "recommendations",
    "wetread": "wet read",
}
# Checked by substring, in this order ("findings and impression" is an impression).
_MAIN_NAMES = ("impression", "findings", "history", "comparison", "addendum")
# Headings that name the views taken introduce the findings.
_VIEW_TITLE = re.compile(
    r"chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and"
    r"|two views|frontal view|pa view|ap view|one view|lateral view|bone window"
    r"|frontal upright|frontal semi-upright|ribs|pa and lat"
)

REFERENCE_SOURCES = ("findings", "impression", "last_paragraph")


def normalise_heading(name: str) -> str:
    """Map a heading as written (``CLINICAL HISTORY``) to its normalised name (``history``)."""
    name = name.lower().strip()
    if name in _KNOWN_NAMES:
        return _KNOWN_NAMES[name]
    for main in _MAIN_NAMES:
        if main in name:
            return main
    if _VIEW_TITLE.search(name):
        return "findings"
    return name


def clean_text(text: str) -> str:
    """Drop banners and separator lines, collapse whitespace, strip."""
    return _WHITESPACE.sub(" ", _BANNER.sub(" ", text)).strip()


def _raw_sections(text: str) -> list[tuple[str, str]]:
    """(normalised name, raw text) for each section in order, preamble included."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    matches = list(_HEADING.finditer(text))
    if not matches:
        return [("full report", text)]
    sections = [("preamble", text[: matches[0].start()])]
    for m, nxt in zip(matches, matches[1:] + [None]):
        end = nxt.start() if nxt is not None else len(text)
        sections.append((normalise_heading(m.group(1)), text[m.end() : end]))
    return sections


def _after_first_paragraph(raw: str) -> str:
    """Everything after the first blank line (the official parser's ``last_paragraph``)."""
    parts = _BLANK_LINE.split(raw, maxsplit=1)
    return parts[1] if len(parts) == 2 else ""


def parse_sections(text: str) -> dict[str, str]:
    """Normalised section name -> cleaned section text; empty sections are left out.

    The last non-empty section of each name wins. ``last_paragraph`` is present only when
    the report has neither findings nor impression (see the module docstring).
    """
    raw = _raw_sections(text)
    out: dict[str, str] = {}
    for name, body in raw:
        cleaned = clean_text(body)
        if cleaned:
            out[name] = cleaned
    if "findings" not in out and "impression" not in out:
        # The last section with any text (an empty trailing heading has nothing to split).
        bodies = [body for _, body in raw if clean_text(body)]
        last = clean_text(_after_first_paragraph(bodies[-1])) if bodies else ""
        if last:
            out["last_paragraph"] = last
    return out


def reference_from_sections(sections: dict[str, str], allow_last_paragraph: bool = True) -> tuple[str, str]:
    """(text, source) from parsed sections: findings, else impression, else last paragraph.

    Returns ``("", "none")`` when there is nothing usable.
    """
    sources = REFERENCE_SOURCES if allow_last_paragraph else REFERENCE_SOURCES[:2]
    for source in sources:
        if sections.get(source):
            return sections[source], source
    return "", "none"


def indication_from_sections(sections: dict[str, str]) -> str:
    return sections.get("indication") or sections.get("history", "")


def extract_reference(text: str) -> tuple[str, str]:
    """The reference findings of a report and the section they came from.

    Source is ``"findings"``, ``"impression"`` (no findings) or ``"last_paragraph"``
    (neither); ``("", "none")`` when the report has no usable text at all.
    """
    return reference_from_sections(parse_sections(text))


def extract_indication(text: str) -> str:
    """The indication section, or the history section when there is none; "" if neither."""
    return indication_from_sections(parse_sections(text))


# The reference text each dataset reader builds from a report's findings and impression.
# "findings" is the paper's convention (and the choice for ReXrank's findings table): the
# findings section, the impression when a report has no findings. "findings+impression" is ReXrank's second
# task: both sections, findings first, joined by one space (whichever exists when only one
# does). "findings-only" never falls back, for evaluations that want findings and nothing else.
SECTION_CHOICES = ("findings", "findings+impression", "findings-only")


def check_section_choice(choice: str) -> str:
    from bench.errors import DataError

    if choice not in SECTION_CHOICES:
        raise DataError(f"unknown section choice {choice!r}; choose one of: {', '.join(SECTION_CHOICES)}")
    return choice


def reference_for(findings: str, impression: str, choice: str = "findings") -> tuple[str, str]:
    """(reference text, where it came from) under a section choice; ("", "none") when the report
    has nothing the choice can use. Inputs are already cleaned section texts ("" when absent)."""
    findings, impression = findings.strip(), impression.strip()
    if choice == "findings-only":
        return (findings, "findings") if findings else ("", "none")
    if choice == "findings+impression":
        if findings and impression:
            return f"{findings} {impression}", "findings+impression"
    elif choice != "findings":
        check_section_choice(choice)
    if findings:
        return findings, "findings"
    if impression:
        return impression, "impression"
    return "", "none"


def no_reference_reason(choice: str) -> str:
    """The fixed phrase (counted in summaries) for a report that gives no reference under `choice`."""
    return "report has no findings section" if choice == "findings-only" else "report has neither findings nor impression"
