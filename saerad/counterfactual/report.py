"""`bench counterfactual eval` as a library: the checks and localisation per finding or feature."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from saerad.counterfactual.evaluate import (Checks, Generator, Localisation, checks, difference, localise,
                                            mean_interval, reduce_mask)
from saerad.counterfactual.intervene import check_feature, decompose, default_beta, do, token_with
from saerad.counterfactual.truth import best_feature, images_with

log = logging.getLogger(__name__)


@dataclass
class Row:
    target: str  # the finding, or "feature I"
    checks: Checks
    localisation: Localisation | None = None
    from_test: int = 0
    from_validate: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "checks": self.checks.to_json(),
                "localisation": self.localisation.to_json() if self.localisation else None,
                "images_from_test": self.from_test, "images_from_validate": self.from_validate}


@dataclass
class EvalResult:
    rows: list[Row]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings, "rows": [r.to_json() for r in self.rows]}


def random_features(alive: np.ndarray, exclude: int, n: int, seed: int) -> np.ndarray:
    """One feature per image, uniformly from the features that fire on the training split."""
    pool = np.setdiff1d(np.flatnonzero(alive), [exclude])
    return np.random.default_rng([seed, 23]).choice(pool, size=n, replace=True)


@torch.no_grad()
def evaluate_finding(gen: Generator, ctx: Any, src: Any, finding: str, n: int, dilate: int) -> Row:
    from bench.data.phantom.masks import PhantomMasks

    best = best_feature(ctx, src.sae, finding)
    beta = default_beta(src.maxima, best.feature)
    chosen = images_with(ctx, finding, n)
    samples = chosen.samples
    log.info("%s: feature %d (train AUROC %.3f, beta %.3g) on %d images (%d test, %d validate)", finding,
             best.feature, best.train_auroc, beta, len(samples), chosen.from_test, chosen.from_validate)
    z = torch.as_tensor(ctx.tokens(samples, "counterfactual"))
    result, imgs = checks(gen, z, best.feature, beta)
    diffs = difference(imgs["added"], imgs["removed"])
    # Chance: the same interventions with a random live feature per image, at that feature's own beta.
    rand = random_features(src.maxima > 0, best.feature, len(samples), gen.seed)
    d = decompose(src.sae, z)
    rows = torch.arange(len(z))
    h_add, h_rem = d.h.clone(), d.h.clone()
    h_add[rows, rand] = torch.as_tensor(src.maxima[rand])
    h_rem[rows, rand] = 0.0
    rimgs = gen.images(torch.cat([token_with(src.sae, d, h_add), token_with(src.sae, d, h_rem)]))
    rdiffs = difference(rimgs[:len(z)], rimgs[len(z):])
    pm = PhantomMasks(ctx.data_root)
    size = gen.model.cfg.image_size
    masks = [reduce_mask(pm.masks(s.dicom_id, [finding])[finding], size) for s in samples]
    hit, rhit, iou, riou = localise(diffs, rdiffs, masks, dilate)
    loc = Localisation(finding, best.feature, src.label(best.feature), best.train_auroc, len(samples),
                       mean_interval(hit), mean_interval(rhit), mean_interval(iou), mean_interval(riou), dilate,
                       [s.dicom_id for s in samples])
    return Row(finding, result, loc, chosen.from_test, chosen.from_validate)


@torch.no_grad()
def evaluate_feature(gen: Generator, ctx: Any, src: Any, feature: int, n: int, beta: float | None) -> Row:
    check_feature(src.sae, feature)
    b = beta if beta is not None else default_beta(src.maxima, feature)
    samples = ctx.evaluation_dataset().samples[:n]
    z = torch.as_tensor(ctx.tokens(samples, "counterfactual"))
    result, _ = checks(gen, z, feature, b)
    return Row(f"feature {feature}", result, None, len(samples), 0)


def _cell(iv) -> str:
    return f"{iv.value:.2f} [{iv.low:.2f}, {iv.high:.2f}]"


def markdown(result: EvalResult) -> str:
    lines = []
    locs = [r for r in result.rows if r.localisation]
    if locs:
        lines += ["| finding | feature (train AUROC) | images | pointing hit rate | random feature | "
                  "ratio | top-region IoU | random feature |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in locs:
            lo = r.localisation
            ratio = (f"{lo.hit_rate.value / lo.random_hit_rate.value:.1f}x" if lo.random_hit_rate.value > 0
                     else "inf (random 0)")
            src = f"{r.from_test} test" + (f" + {r.from_validate} validate" if r.from_validate else "")
            lines.append(f"| {r.target} | #{lo.feature} ({lo.feature_train_auroc:.3f}) | {src} | {_cell(lo.hit_rate)} | "
                         f"{_cell(lo.random_hit_rate)} | {ratio} | {_cell(lo.iou)} | {_cell(lo.random_iou)} |")
        lines.append("")
    lines += ["| target | feature | beta | n | effectiveness: h_i(add) > h_i(remove) | gap / beta | fires on neither | "
              "reversibility, SAE cycle: tokens | pixels | reversibility, pixel cycle: pixels | tokens | "
              "composition: token | pixels |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.rows:
        c = r.checks
        lines.append(f"| {r.target} | #{c.feature} | {c.beta:.3g} | {c.n} | {_cell(c.effectiveness_order)} | "
                     f"{_cell(c.effectiveness_gap)} | {_cell(c.effectiveness_silent)} | "
                     f"{_cell(c.reversibility_sae_tokens)} | {_cell(c.reversibility_sae_pixels)} | "
                     f"{_cell(c.reversibility_pixels)} | {_cell(c.reversibility_tokens)} | "
                     f"{_cell(c.composition_token)} | {_cell(c.composition_pixels)} |")
    return "\n".join(lines)


def run_eval(gen: Generator, ctx: Any, src: Any, findings: Sequence[str], features: Sequence[int], n: int,
             dilate: int, beta: float | None) -> EvalResult:
    rows = [evaluate_finding(gen, ctx, src, f, n, dilate) for f in findings]
    rows += [evaluate_feature(gen, ctx, src, i, n, beta) for i in features]
    return EvalResult(rows, {"n": n, "steps": gen.steps, "scheduler": gen.scheduler, "seed": gen.seed,
                             "dilate": dilate, "sae_dir": str(src.directory)})
