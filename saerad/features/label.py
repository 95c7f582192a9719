"""Feature labelling: a short description of what each SAE feature detects.

Two labellers share one output format (`LabelRecord`, one per feature):

- `LLMLabeller` (the paper's method, §4.2 and App. B.4): the reference reports of the
  feature's top-k training images, strongest first, go to an LLM with a prompt asking for the
  single most consistent finding, reasoned step by step, ending in one line
  "*This feature represents ...". That line is parsed (`parse_description`); a reply without
  it gets a follow-up turn with a nudge (the first prompt, the end of that reply, the nudge),
  up to `retries` times, and is then recorded as unlabelled with its raw text kept (also when
  a follow-up call itself fails). An answer that copies an example answer line of the
  prompts (the nudge shows one) counts as no answer. The prompt is a text file users can replace.
- `LexicalLabeller` (LLM-free, the offline default): every finding statement of the top
  reports (see `statements.py`) is a candidate; each is scored by the log-odds ratio of its
  document frequency among the top reports against the rest of the training corpus, divided
  by its standard error (a z-score, so that a statement in 8 of 10 top reports beats one in 2
  of 10 even if the latter is rarer in the corpus). The best candidate with enough support is
  the label, in its most common surface form: "Moderate right pleural effusion."

Label statuses: "labelled"; "unlabelled" (no usable answer; `raw` keeps the last reply);
"no_examples" (the feature never fired on the training images); "error" (the LLM call failed
for good; `raw` holds the error).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from bench.jsonfiles import read_json
from bench.errors import BenchError, DataError
from saerad.features.statements import as_sentence, clean_surface, split_statements, statement_key

log = logging.getLogger(__name__)

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
DEFAULT_PROMPT = PROMPT_DIR / "label_feature.txt"
DEFAULT_NUDGE = PROMPT_DIR / "label_nudge.txt"
LABELS_FORMAT = "saerad-labels/1"
STATUSES = ("labelled", "unlabelled", "no_examples", "error")
# A label must be stated in at least 3 of the top reports (30% of the default 10): with 2, a
# phrasing that is merely rare in the corpus wins over a finding most top reports share.
MIN_SUPPORT = 3

# A follow-up turn repeats the model's reply; only its last NUDGE_REPLY_CHARS characters
# (about 500 tokens) are kept. A rambling first reply of ~1,000 tokens after a ~1,000-token
# prompt otherwise made the follow-up overflow a 2,048-token context (llama.cpp), and the
# conclusion the nudge asks for follows from the end of the reasoning anyway.
NUDGE_REPLY_CHARS = 2000

# The answer line: optional markdown around it ("**...**", "- *..."), one or more asterisks,
# then "This feature represents" and the description up to the end of the line.
_ANSWER = re.compile(r"^[ \t>\-]*\*+[ \t]*(?:\*\*)?[ \t]*this feature represents\b[ \t:]*(.*?)[ \t*]*$",
                     re.IGNORECASE | re.MULTILINE)


@dataclass
class LabelRecord:
    id: int
    label: str
    method: str
    raw: str
    n_top: int
    status: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise BenchError(f"label status {self.status!r} is not one of {STATUSES}")


def parse_description(reply: str) -> str | None:
    """The description in the last "*This feature represents ..." line of a reply, as a
    sentence ("An enlarged cardiac silhouette."), or None when there is no such line or it
    is empty."""
    matches = _ANSWER.findall(reply or "")
    if not matches:
        return None
    text = matches[-1].strip().strip("*").strip()
    text = re.sub(r"^\[(.*)\]\.?$", r"\1", text).strip()  # the template's brackets, copied literally
    if not re.search(r"[A-Za-z]", text):
        return None
    return as_sentence(text)


def _norm(label: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", label.lower()).split())


def load_prompt(path: str | Path | None, required: Sequence[str] = ("{reports}",)) -> str:
    """A prompt template from a file; it must contain the named placeholders."""
    p = Path(path) if path else DEFAULT_PROMPT
    if not p.exists():
        raise DataError(f"prompt file {p} does not exist")
    text = p.read_text()
    missing = [r for r in required if r not in text]
    if missing:
        raise DataError(f"prompt file {p} lacks the placeholder(s) {missing}; the reports are inserted there")
    return text


def render_label_prompt(template: str, reports: Sequence[str]) -> str:
    body = "\n\n".join(f"Report {i + 1}:\n{' '.join(r.split())}" for i, r in enumerate(reports))
    # str.replace rather than str.format: a user's prompt may contain other braces.
    return template.replace("{n_reports}", str(len(reports))).replace("{reports}", body)


# -- LLM labeller -----------------------------------------------------------------------

class LLMLabeller:
    """The paper's labeller over any object with `chat_many(list[ChatRequest])`."""

    method = "llm"

    def __init__(self, client: Any, prompt: str | Path | None = None, *, retries: int = 2,
                 max_tokens: int = 1024, temperature: float = 0.0, nudge: str | Path | None = None,
                 nudge_reply_chars: int = NUDGE_REPLY_CHARS):
        if retries < 0:
            raise BenchError(f"retries must be 0 or more, got {retries}")
        if nudge_reply_chars < 1:
            raise BenchError(f"nudge_reply_chars must be at least 1, got {nudge_reply_chars}")
        self.nudge_reply_chars = nudge_reply_chars
        self.client = client
        self.template = load_prompt(prompt)
        self.nudge = Path(nudge or DEFAULT_NUDGE).read_text().strip()
        # The answer lines the prompts show as examples ("<your description>", the nudge's
        # "a small left pleural effusion"): a small model copies them verbatim, and such a
        # copy says nothing about the feature, so it is not accepted as a label.
        # The nudge's example counts only in follow-up turns, the first time the model sees it.
        self.examples = [{_norm(x) for x in examples if x} for examples in (
            (parse_description(self.template),), (parse_description(self.template), parse_description(self.nudge)))]
        self.retries = retries
        self.max_tokens = max_tokens
        self.temperature = temperature

    def _request(self, messages: list[dict[str, str]]):
        from bench.llm.base import ChatRequest

        return ChatRequest(messages=messages, temperature=self.temperature, max_tokens=self.max_tokens)

    def _tail(self, reply: str) -> str:
        """The reply as repeated in a follow-up turn: its end, cut at a word boundary."""
        reply = (reply or "").strip()
        if not reply:
            return "(empty)"
        if len(reply) <= self.nudge_reply_chars:
            return reply
        tail = reply[-self.nudge_reply_chars:]
        cut = tail.find(" ")
        return "..." + (tail[cut + 1:] if 0 <= cut < 40 else tail)

    def label_many(self, items: Sequence[tuple[int, Sequence[str]]]) -> list[LabelRecord]:
        """Labels for (feature id, top reports) pairs, in the same order."""
        out: dict[int, LabelRecord] = {}
        convs: dict[int, list[dict[str, str]]] = {}
        for fid, reports in items:
            if not reports:
                out[fid] = LabelRecord(fid, "", self.method, "", 0, "no_examples")
            else:
                convs[fid] = [{"role": "user", "content": render_label_prompt(self.template, reports)}]
        n_top = {fid: len(r) for fid, r in items}
        pending = list(convs)
        for attempt in range(self.retries + 1):
            if not pending:
                break
            replies = self.client.chat_many([self._request(convs[f]) for f in pending])
            retry: list[int] = []
            for fid, resp in zip(pending, replies):
                if not getattr(resp, "ok", True) or getattr(resp, "error", None):
                    if fid in out:
                        # A follow-up failed: the model did answer, without the line, so the
                        # feature stays unlabelled (not "error") and keeps that answer.
                        prev = out[fid]
                        out[fid] = LabelRecord(fid, "", self.method, f"{prev.raw}\n[follow-up failed: {resp.error}]",
                                               n_top[fid], "unlabelled")
                    else:
                        out[fid] = LabelRecord(fid, "", self.method, str(resp.error), n_top[fid], "error")
                    continue
                label = parse_description(resp.text)
                if label is not None and _norm(label) in self.examples[min(attempt, 1)]:
                    log.debug("feature %d: the reply copied the prompt's example answer %r", fid, label)
                    label = None
                if label is not None:
                    out[fid] = LabelRecord(fid, label, self.method, resp.text, n_top[fid], "labelled")
                    continue
                out[fid] = LabelRecord(fid, "", self.method, resp.text, n_top[fid], "unlabelled")
                # The first prompt, this reply's end and the nudge: earlier failed turns are
                # not repeated, so the follow-up has a bounded length however many there are.
                convs[fid] = convs[fid][:1] + [{"role": "assistant", "content": self._tail(resp.text)},
                                               {"role": "user", "content": self.nudge}]
                retry.append(fid)
            if retry and attempt < self.retries:
                log.info("labelling: %d replies lacked the '*This feature represents' line; asking again", len(retry))
            pending = retry
        return [out[fid] for fid, _ in items]


# -- LLM-free labeller ------------------------------------------------------------------

def report_statements(report: str) -> dict[str, list[str]]:
    """Statement key -> surface forms, for one report (each key counted once per report)."""
    out: dict[str, list[str]] = {}
    for st in split_statements(report):
        key = statement_key(st)
        if len(key.split()) >= 1 and re.search(r"[a-z]", key):
            out.setdefault(key, []).append(clean_surface(st))
    return out


@dataclass
class Candidate:
    key: str
    surface: str
    support: int  # top reports that state it
    background: int  # other corpus reports that state it
    z: float


class LexicalLabeller:
    """The LLM-free labeller: the statement that best separates a feature's top reports from
    the rest of the corpus (see the module docstring).

    `corpus` is every training report; `min_support` is the fewest top reports a label must
    appear in (lowered to the number of top reports when there are fewer); `prior` is the
    pseudo-count added to each cell of the 2x2 table.
    """

    method = "lexical"

    def __init__(self, corpus: Iterable[str], *, min_support: int = MIN_SUPPORT, prior: float = 0.5):
        self._cache: dict[str, dict[str, list[str]]] = {}
        df: Counter[str] = Counter()
        n = 0
        for text in corpus:
            df.update(self._statements(text).keys())
            n += 1
        if n == 0:
            raise DataError("the LLM-free labeller needs a corpus of training reports; it is empty")
        self.df, self.n_corpus = df, n
        self.min_support = min_support
        self.prior = prior

    def _statements(self, text: str) -> dict[str, list[str]]:
        got = self._cache.get(text)
        if got is None:
            got = self._cache[text] = report_statements(text)
        return got

    def candidates(self, reports: Sequence[str]) -> list[Candidate]:
        """All statements of the top reports, best first."""
        support: Counter[str] = Counter()
        surfaces: dict[str, Counter[str]] = {}
        for r in reports:
            for key, forms in self._statements(r).items():
                support[key] += 1
                surfaces.setdefault(key, Counter()).update(forms)
        n_top = len(reports)
        # The top reports are part of the corpus; compare them with the rest of it.
        n_bg = max(self.n_corpus - n_top, 0)
        a0 = self.prior
        out = []
        for key, a in support.items():
            b = max(self.df.get(key, 0) - a, 0)
            lo_top = math.log((a + a0) / (n_top - a + a0))
            lo_bg = math.log((b + a0) / (n_bg - b + a0))
            se = math.sqrt(1 / (a + a0) + 1 / (n_top - a + a0) + 1 / (b + a0) + 1 / (n_bg - b + a0))
            # Most common surface form; ties to the shortest, then alphabetical, for determinism.
            surface = min(surfaces[key].items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[0]
            out.append(Candidate(key, surface, a, b, (lo_top - lo_bg) / se))
        # Ties: more support, then the more specific (longer) statement, then alphabetical.
        out.sort(key=lambda c: (-c.z, -c.support, -len(c.key), c.key))
        return out

    def label(self, feature: int, reports: Sequence[str]) -> LabelRecord:
        if not reports:
            return LabelRecord(feature, "", self.method, "", 0, "no_examples")
        need = min(self.min_support, len(reports))
        cands = [c for c in self.candidates(reports) if c.support >= need]
        if not cands:
            return LabelRecord(feature, "", self.method, "no statement recurs in the top reports",
                               len(reports), "unlabelled")
        best = cands[0]
        raw = "; ".join(f"{c.key!r} z={c.z:.2f} top={c.support}/{len(reports)} rest={c.background}/"
                        f"{max(self.n_corpus - len(reports), 0)}" for c in cands[:3])
        return LabelRecord(feature, as_sentence(best.surface), self.method, raw, len(reports), "labelled")

    def label_many(self, items: Sequence[tuple[int, Sequence[str]]]) -> list[LabelRecord]:
        return [self.label(fid, reports) for fid, reports in items]


# -- labels files -----------------------------------------------------------------------

def label_index(index: Any, labeller: Any, features: Sequence[int] | None = None) -> list[LabelRecord]:
    """Label the features of a FeatureIndex (all, or the given ids) with a labeller."""
    ids = list(range(index.d_sae)) if features is None else list(features)
    for f in ids:
        index.check_feature(f)
    return labeller.label_many([(f, index.top_reports(f)) for f in ids])


def status_counts(records: Iterable[LabelRecord]) -> dict[str, int]:
    c = Counter(r.status for r in records)
    return {s: c.get(s, 0) for s in STATUSES}


def save_labels(path: str | Path, records: Sequence[LabelRecord], meta: dict[str, Any] | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": LABELS_FORMAT, "meta": {**(meta or {}), "counts": status_counts(records)},
           "features": [asdict(r) for r in sorted(records, key=lambda r: r.id)]}
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(p)
    return p


def load_labels(path: str | Path) -> dict[int, LabelRecord]:
    """Feature id -> LabelRecord. Accepts our labels file, or a plain {"id": "label"} map
    (for labels made elsewhere)."""
    p = Path(path)
    doc = read_json(p, "labels file")
    if isinstance(doc, dict) and "features" in doc:
        try:
            return {int(r["id"]): LabelRecord(int(r["id"]), r.get("label", ""), r.get("method", "?"),
                                              r.get("raw", ""), int(r.get("n_top", 0)),
                                              r.get("status", "labelled"))
                    for r in doc["features"]}
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"labels file {p}: malformed feature record ({e}); each needs id and label") from None
    if isinstance(doc, dict):
        try:
            return {int(k): LabelRecord(int(k), str(v), "file", "", 0, "labelled" if v else "unlabelled")
                    for k, v in doc.items()}
        except ValueError:
            pass
    raise DataError(f"labels file {p}: expected {{\"features\": [...]}} or a {{\"id\": \"label\"}} map")
