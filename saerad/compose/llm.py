"""LLM report composition (paper §4.2 Eq. 11, App. B.5; docs/method.md, Report composition).

The LLM receives the descriptions of the image's active features, each in the paper's
"This feature represents ..." form, with importance scores, and, behind flags (the paper's
Table 1 setting uses both; Table 2 ablates them), the indication and up to three prior
reports of the patient, each whole (every section) with how long before the current scan it
was written (never dates). It writes one paragraph of findings.

Importance scores (App. B.5: "Each feature is associated to an importance score in
accordance to the magnitude of the SAE dimension of provenance — the higher the magnitude,
the higher the importance score. The scores were normalised to the interval between 0 and
1."): the paper does not say how. Here each shown feature's activation is divided by the
largest activation among the features shown, so the strongest shown feature scores 1.0 as
in the paper's example. Min-max scaling would give the weakest shown feature 0, telling the
model that a feature present in the image does not matter. The `score` that the system
stores (activation / the image's largest activation) differs only when the image's strongest
features have no description and are therefore not shown.

The prompt is a text file with three placeholders, each replaced by a whole block or by
nothing: `{history}` (prior reports), `{indication}`, `{features}` (required).

Which sentence came from which features is not reported by the LLM; for provenance each
output sentence is attributed to the features whose description shares at least half of its
content words with the sentence (an approximation, recorded as such).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.data.records import Prior, Sample
from bench.errors import BenchError
from saerad.compose.llm_free import ActiveFeature, Composition, compose_llm_free, content_words
from saerad.features.label import load_prompt
from bench.sentences import split_sentences

log = logging.getLogger(__name__)

DEFAULT_PROMPT = Path(__file__).resolve().parent / "prompts" / "compose_findings.txt"


def describe_interval(days: float) -> str:
    """'1 year, 3 days and 4 hours' from a number of days (no dates, as the paper asks)."""
    if days < 0:
        days = 0.0
    total_hours = int(round(days * 24))
    years, rem = divmod(total_hours, 365 * 24)
    d, h = divmod(rem, 24)
    parts = [f"{years} year{'s' if years != 1 else ''}"] if years else []
    parts.append(f"{d} day{'s' if d != 1 else ''}")
    parts.append(f"{h} hour{'s' if h != 1 else ''}")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def prior_report_text(prior: Prior) -> str:
    """The prior as the composer shows it: the whole report when the reader kept it, one
    section per line; else the extracted findings, whitespace collapsed."""
    if prior.report.strip():
        return "\n".join(" ".join(line.split()) for line in prior.report.splitlines() if line.strip())
    return " ".join(prior.text.split())


def history_block(sample: Sample, max_priors: int = 3) -> str:
    # Most recent first: the closest prior is the most informative comparison.
    priors = sorted(sample.priors, key=lambda p: p.days_before)[:max_priors]
    if not priors:
        return ""
    lines = ["", "Earlier reports of the same patient, most recent first. They may hold information "
             "related to what the current radiograph shows:", "<patient_history>"]
    for i, p in enumerate(priors, 1):
        lines += [f"<prior_report number=\"{i}\" written=\"{describe_interval(p.days_before)} before the "
                  "current radiograph\">", prior_report_text(p), "</prior_report>"]
    lines.append("</patient_history>")
    return "\n".join(lines) + "\n"


def indication_block(sample: Sample) -> str:
    text = " ".join(sample.indication.split())
    if not text:
        return ""
    return f"\nThe reason the radiograph was requested:\n<indication>\n{text}\n</indication>\n"


_PREFIX = "this feature represents"


def feature_sentence(description: str) -> str:
    """A description in the paper's form, "This feature represents <description>" (App. B.4
    answer line, App. B.5 feature blocks). Labels are stored without the prefix because the
    LLM-free composer uses them as report sentences; here it is put back."""
    text = " ".join(description.split())
    if text.lower().startswith(_PREFIX):
        return "This feature represents" + text[len(_PREFIX):]
    # Lower-case the first letter of an ordinary word only: "AP view", "NG tube" stay as written.
    first = text.split(" ", 1)[0]
    if len(first) > 1 and first[1:].islower() or len(first) == 1 and first != "I":
        text = text[0].lower() + text[1:]
    return f"This feature represents {text}"


def shown_scores(features: Sequence[ActiveFeature]) -> list[float]:
    """Importance in [0, 1] over the features shown: activation / the largest shown activation."""
    top = max((f.activation for f in features), default=0.0)
    if top <= 0:
        # No usable activations (a negative threshold, or features built by hand): keep the
        # scores given, clipped to the interval.
        return [min(max(f.score, 0.0), 1.0) for f in features]
    return [max(f.activation, 0.0) / top for f in features]


def features_block(features: Sequence[ActiveFeature]) -> str:
    # Only described features are shown, and the scores are normalised over exactly those.
    shown = [f for f in features if f.description]
    ranked = sorted(zip(shown_scores(shown), shown), key=lambda sf: (-sf[0], sf[1].id))
    return "\n".join(f"{i}. (importance {score:.2f}) {feature_sentence(f.description or '')}"
                     for i, (score, f) in enumerate(ranked, 1))


def attribute(sentence: str, features: Sequence[ActiveFeature], min_overlap: float = 0.5) -> list[int]:
    words = content_words(sentence)
    out = []
    for f in features:
        if not f.description:
            continue
        desc = content_words(f.description)
        if desc and len(words & desc) / len(desc) >= min_overlap:
            out.append(f.id)
    return out


class LLMComposer:
    """Findings from active features with an LLM client (`chat_many(list[ChatRequest])`)."""

    def __init__(self, client: Any, prompt: str | Path | None = None, *, indication: bool = False,
                 priors: bool = False, max_priors: int = 3, max_tokens: int = 512,
                 temperature: float = 0.0,
                 fallback: Callable[[Sequence[ActiveFeature]], Composition] = compose_llm_free):
        if max_priors < 0:
            raise BenchError(f"max_priors must be 0 or more, got {max_priors}")
        self.client = client
        self.template = load_prompt(prompt or DEFAULT_PROMPT, required=("{features}",))
        self.indication, self.priors, self.max_priors = indication, priors, max_priors
        self.max_tokens, self.temperature = max_tokens, temperature
        self.fallback = fallback  # the LLM-free composer, with the system's settings

    def render(self, sample: Sample, features: Sequence[ActiveFeature]) -> str:
        return (self.template
                .replace("{history}", history_block(sample, self.max_priors) if self.priors else "")
                .replace("{indication}", indication_block(sample) if self.indication else "")
                .replace("{features}", features_block(features) or "(none detected)"))

    def compose_many(self, items: Sequence[tuple[Sample, Sequence[ActiveFeature]]]) -> list[Composition]:
        from bench.llm.base import ChatRequest

        reqs = [ChatRequest(messages=[{"role": "user", "content": self.render(s, fs)}],
                            temperature=self.temperature, max_tokens=self.max_tokens) for s, fs in items]
        replies = self.client.chat_many(reqs) if reqs else []
        out = []
        for (sample, fs), resp in zip(items, replies):
            text = " ".join((resp.text or "").split()) if resp.ok else ""
            if not text:
                # A failed call must not sink the run: fall back to the LLM-free composer
                # and say so in the provenance.
                comp = self.fallback(fs)
                comp.method = "llm-free (fallback: " + (resp.error or "empty LLM reply") + ")"
                out.append(comp)
                continue
            sentences = [{"text": s, "features": attribute(s, fs), "attribution": "lexical overlap"}
                         for s in split_sentences(text)]
            out.append(Composition(text, sentences, [], method="llm"))
        return out
