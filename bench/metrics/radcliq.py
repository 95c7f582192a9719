"""RadCliQ-v1 (Yu et al. 2023, Patterns; metric "radcliq"), reported as ReXrank reports it: 1/RadCliQ-v1.

RadCliQ-v1 is a linear model fitted to radiologists' error counts. Per pair, four inputs are
standardised with the mean and scale of its fitting data and combined with fixed coefficients:

    RadCliQ-v1 = sum_i c_i (x_i - mean_i) / scale_i + intercept          (lower is better: fewer errors)

with x = (RadGraph combined F1, BERTScore, SembScore, BLEU-2). ReXrank ranks systems by
1 / mean(RadCliQ-v1 over pairs) (higher is better), which is the leaderboard column here; the
mean itself is in aggregate.json as `radcliq_v1`. The inverse only orders systems while the mean
is positive, i.e. for systems whose inputs are on average below the fitting data's means: a
system that reproduces every reference has inputs of 1 and RadCliQ-v1 = -1.44, so 1/RadCliQ-v1
< 0 (the field's definition; we report it as it is).

The numbers are CXR-Report-Metric's released model file CXRMetric/radcliq-v1.pkl (a pickled
sklearn StandardScaler and a coefficient vector, commit 8495627 of rajpurkarlab/CXR-Report-Metric,
2023-05-14), read with pickletools, not unpickled; RadEval carries the same numbers. The
inputs are made as CXR-Report-Metric makes them:

- RadGraph combined: entity F1 over the sets {(tokens, label)} and relation F1 over the sets
  {((tokens, label), (target tokens, target label), relation)} of the two annotations, each 0
  when undefined, averaged; annotations by the radgraph package (our RGER annotator, model
  `radgraph` by default: the original RadGraph model CXR-Report-Metric ran);
- BERTScore: our `bertscore` (distilroberta-base layer 5, baseline rescaling, no idf);
- SembScore: our `sembscore` (CheXbert [CLS] cosine);
- BLEU-2: fast_bleu's sentence BLEU with weights (1/2, 1/2) and its default smoothing (NLTK's
  method 1: a zero bigram precision m/d becomes 0.1/d; a zero unigram precision gives 0), on
  CXR-Report-Metric's tokens (lower-cased, "." made a token of its own, split on spaces).
  Its coefficient is 4.3e-12, so BLEU-2 cannot move RadCliQ-v1 by more than about 1.5e-11.

Unavailable, naming every missing input, when any input metric cannot run.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import Field

from bench.errors import BenchError, MetricUnavailable
from bench.metrics.bertscore import DEFAULT_MODEL, BertScoreMetric
from bench.metrics.means import MeanScoresMetric
from bench.metrics.radgraph.annotator import AnnotatorConfig, RadGraphAnnotator
from bench.metrics.sembscore import SembScoreMetric
from bench.options import OptionsModel

# CXR-Report-Metric, CXRMetric/radcliq-v1.pkl: StandardScaler (160 samples seen) and coefficients,
# in the order of its COLS: radgraph_combined, bertscore, semb_score, bleu_score; then the intercept.
INPUTS = ("radgraph", "bertscore", "semb", "bleu2")
SCALER_MEAN = (0.5379231241355762, 0.6175725628125001, 0.7647942121140658, 0.44738335396242174)
SCALER_SCALE = (0.3028258411486429, 0.22430938459304575, 0.2539439110169773, 0.2989271671041838)
COEFFICIENTS = (-0.37708368261038905, -0.37030009974480316, -0.25261621789593225, 4.315048405024756e-12)
INTERCEPT = 2.466552561323256e-10
SOURCE = "CXR-Report-Metric CXRMetric/radcliq-v1.pkl (rajpurkarlab, commit 8495627)"


def radcliq_v1(inputs: np.ndarray) -> np.ndarray:
    """RadCliQ-v1 of an (n, 4) array of (RadGraph combined, BERTScore, SembScore, BLEU-2)."""
    x = np.asarray(inputs, dtype=np.float64)
    z = (x - np.asarray(SCALER_MEAN)) / np.asarray(SCALER_SCALE)
    return z @ np.asarray(COEFFICIENTS) + INTERCEPT


# -- RadGraph combined ----------------------------------------------------------------------

def _set_f1(reference: set, candidate: set) -> float:
    tp = len(reference & candidate)
    precision = tp / len(candidate) if candidate else 0.0
    recall = tp / len(reference) if reference else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def entities_and_relations(annotation: Mapping[str, Any]) -> tuple[set, set]:
    """CXR-Report-Metric's sets: {(tokens, label)} and {((tokens, label), (tokens, label), relation)}."""
    entities = annotation.get("entities") or {}
    ents = {(e["tokens"], e["label"]) for e in entities.values()}
    rels = set()
    for e in entities.values():
        for relation, target in e.get("relations", []):
            t = entities.get(str(target))
            if t is None:
                raise BenchError(f"RadGraph annotation: relation to missing entity {target!r}")
            rels.add(((e["tokens"], e["label"]), (t["tokens"], t["label"]), relation))
    return ents, rels


def radgraph_combined(reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> float:
    """Mean of entity F1 and relation F1 (each 0 when undefined), as CXR-Report-Metric computes them."""
    re_, rr = entities_and_relations(reference)
    ce, cr = entities_and_relations(candidate)
    return (_set_f1(re_, ce) + _set_f1(rr, cr)) / 2


# -- BLEU-2 as fast_bleu computes it ----------------------------------------------------------

def cxr_tokens(text: str) -> list[str]:
    """CXR-Report-Metric's prep_reports: lower-case, '.' -> ' .', split on single spaces, drop empties."""
    return [t for t in str(text).lower().replace(".", " .").split(" ") if t != ""]


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu2(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """fast_bleu's BLEU with weights (1/2, 1/2), one reference, smoothing method 1."""
    ref, hyp = list(reference), list(hypothesis)
    log_sum = 0.0
    for n in (1, 2):
        counts, ref_counts = _ngrams(hyp, n), _ngrams(ref, n)
        matches = sum(min(c, ref_counts[g]) for g, c in counts.items())
        total = max(1, sum(counts.values()))
        if matches == 0:
            if n == 1:
                return 0.0
            precision = 0.1 / total  # method 1: epsilon 0.1 over the same denominator
        else:
            precision = matches / total
        log_sum += 0.5 * math.log(precision)
    bp = 1.0 if len(hyp) > len(ref) else (0.0 if not hyp else math.exp(1 - len(ref) / len(hyp)))
    return bp * math.exp(log_sum)


class RadCliQMetric(MeanScoresMetric):
    name = "radcliq"
    columns = ("radcliq_inv",)
    headers = {"radcliq_inv": "1/RadCliQ-v1"}
    means = {"radcliq_v1": "radcliq_v1"}
    description = ("1/RadCliQ-v1 (ReXrank's ranking metric): 1 / mean over samples of RadCliQ-v1, the linear "
                   "model of CXR-Report-Metric's radcliq-v1.pkl on RadGraph combined F1, BERTScore "
                   "(distilroberta-base L5, rescaled), SembScore and BLEU-2")

    class Options(OptionsModel):
        bertscore_model: str = DEFAULT_MODEL  # Hugging Face id or local directory
        bertscore_idf: bool = False  # CXR-Report-Metric's default (ReXrank: off)
        chexbert_weights_path: Path | None = None
        chexbert_tokenizer_path: Path | None = None
        radgraph_model_type: str = "radgraph"  # the original RadGraph model CXR-Report-Metric ran
        radgraph_model_path: str | None = None
        radgraph_python: str | None = None
        device: str = "cpu"
        batch_size: int = Field(16, ge=1)

    def __init__(self, bertscore_model: str = DEFAULT_MODEL, bertscore_idf: bool = False,
                 chexbert_weights_path: str | Path | None = None, chexbert_tokenizer_path: str | Path | None = None,
                 radgraph_model_type: str = "radgraph", radgraph_model_path: str | None = None,
                 radgraph_python: str | None = None, device: str = "cpu", batch_size: int = 16,
                 annotator: RadGraphAnnotator | None = None, bertscore: BertScoreMetric | None = None,
                 sembscore: SembScoreMetric | None = None):
        self.bertscore = bertscore or BertScoreMetric(model=bertscore_model, idf=bertscore_idf, device=device)
        self.sembscore = sembscore or SembScoreMetric(chexbert_weights_path, chexbert_tokenizer_path, device,
                                                      batch_size)
        self.annotator = annotator or RadGraphAnnotator(AnnotatorConfig(
            model_type=radgraph_model_type, model_path=radgraph_model_path, python=radgraph_python,
            device=device))

    def attach_cache(self, cache_root: Path | None) -> None:
        super().attach_cache(cache_root)
        self.bertscore.attach_cache(cache_root)
        self.sembscore.attach_cache(cache_root)
        if cache_root is not None and not self.annotator.config.cache_dir:
            self.annotator.cache_dir = Path(cache_root) / "radgraph"

    def check(self) -> None:
        missing = []
        for what, check in (("RadGraph", self.annotator.resolve), ("BERTScore", self.bertscore.check),
                            ("SembScore", self.sembscore.check)):
            try:
                check()
            except MetricUnavailable as exc:
                missing.append((what, exc))
        if missing:
            raise MetricUnavailable("needs " + "; ".join(f"{w}: {e.reason}" for w, e in missing),
                                    "; ".join(e.remedy for _, e in missing if e.remedy))

    def inputs(self, references: Sequence[str], predictions: Sequence[str]) -> np.ndarray:
        """(n, 4): RadGraph combined, BERTScore F, SembScore, BLEU-2 per pair."""
        refs, preds = list(references), list(predictions)
        annotations = self.annotator.annotate(refs + preds)
        radgraph = [radgraph_combined(r, p) for r, p in zip(annotations[:len(refs)], annotations[len(refs):])]
        bert = self.bertscore.per_sample(refs, preds)["bertscore_f"].to_numpy()
        semb = self.sembscore.per_sample(refs, preds)["sembscore"].to_numpy()
        bleu = [bleu2(cxr_tokens(r), cxr_tokens(p)) for r, p in zip(refs, preds)]
        return np.column_stack([radgraph, bert, semb, bleu]) if refs else np.zeros((0, 4))

    def per_sample(self, references: Sequence[str], predictions: Sequence[str]) -> pd.DataFrame:
        if len(references) != len(predictions):
            raise ValueError(f"radcliq: {len(references)} references but {len(predictions)} predictions")
        x = self.inputs(references, predictions)
        frame = pd.DataFrame(x, columns=[f"radcliq_{name}" for name in INPUTS])
        frame.insert(0, "radcliq_v1", radcliq_v1(x))
        return frame

    def from_means(self, means: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mean = means["radcliq_v1"]
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"radcliq_inv": 1.0 / mean, "radcliq_v1": mean}

    def signature_settings(self) -> dict:
        bs = self.bertscore.signature_settings()
        return {"model": "radcliq-v1-8495627", "radgraph": f"{self.annotator.config.model_type}-"
                f"{self.annotator.fingerprint()[:8]}", "bertscore": f"{bs['model']}-L{bs['layer']}-idf{bs['idf']}-"
                f"{bs['rescale']}", "semb": self.sembscore.signature_settings()["model"], "bleu": "fastbleu2-smooth1"}

    def config(self) -> dict:
        cfg = super().config()
        cfg.update(source=SOURCE, scaler_mean=SCALER_MEAN, scaler_scale=SCALER_SCALE, coefficients=COEFFICIENTS,
                   intercept=INTERCEPT, bertscore=self.bertscore.config(), sembscore=self.sembscore.config(),
                   radgraph_model_type=self.annotator.config.model_type)
        return cfg
