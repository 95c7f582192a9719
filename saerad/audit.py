"""Where does a planted finding get lost? An audit of one SAE-Rad run on phantom data.

SAE-Rad turns an image into a report in four steps; on a phantom dataset the planted findings
(`phantom-labels.csv.gz`) let each step be scored on its own, per finding:

1. encoder      linear-probe AUROC: logistic regression on the training split's CLS tokens,
                scored on the run's test images (`bench.encoders.probe_auroc`). What the tokens
                carry at all.
2. SAE          best-feature AUROC: the SAE feature f_i = h_i ||W_dec[:, i]|| with the highest
                AUROC on the training split, scored on the test images (the choice among
                thousands of features is made on train, so the test number is not flattered).
3. label        do the features' labels name the finding? For the features whose label asserts
                the finding (the phantom's rule-based reader, `phantom_truth.assertions`, on the
                label text): the share whose top-k training images (the feature index) are more
                enriched (rate / base rate) for this finding than for any other planted finding;
                and whether the train-chosen best feature's label names it.
4. composition  over the run's test predictions: recall (share of images with the finding planted
                whose report asserts it) and precision (share of reports asserting it that have
                it planted); and the same for "a feature whose label asserts the finding fired"
                (the provenance's active features and the descriptions the composer received).

The check "the SAE must not lose what the encoder carries" flags a finding where the probe
AUROC is >= 0.8 and the best feature's AUROC is below the probe's minus 0.03. Two numbers say
where such a gap comes from: the probe made as sparse as the feature (its decision value minus
the training quantile at which it fires on as many training images as the feature, clipped at
0: the best a feature this sparse could do along the probe's own direction), and, for a flagged
finding, the co-occurring finding whose strata (test images with and without it) bring the
feature and the probe within 0.03 of each other in each stratum, if there is one: then the two
agree wherever they look, and the gap is only in how the strata are ranked against each other.

Library code; `bench features audit` (saerad/cli.py) prints. See docs/saerad-audit.md.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.errors import BenchError

log = logging.getLogger(__name__)

PROBE_MIN = 0.8  # the encoder carries a finding when its probe AUROC is at least this
SAE_SLACK = 0.03  # ... and the SAE loses it when its best feature scores below probe - this
# "first weak stage" thresholds (see weak_stage)
LABEL_RECALL_MIN = 0.5
COMPOSE_DROP = 0.1


@dataclass
class FindingAudit:
    finding: str
    train_pos: int
    test_pos: int
    n_test: int
    probe_auroc: float  # 1. encoder
    feature: int  # 2. SAE: chosen on train
    feature_train_auroc: float
    feature_auroc: float  # ... its test AUROC
    sae_loses: bool  # the check: probe >= 0.8 and feature < probe - 0.03
    feature_fire_rate: float  # share of training images on which the chosen feature fires
    probe_as_sparse: float  # the probe firing on that share of training images (see sparse_probe_auroc)
    gap_stratum: dict[str, Any] | None  # flagged findings: see gap_stratum()
    gap_explained_by: str  # flagged findings: "strata", "sparsity" or "" (see explain_gap)
    feature_label: str  # 3. label: the chosen feature's label ("" if none)
    feature_label_names: bool  # ... does it assert the finding?
    n_label_features: int  # features whose label asserts the finding
    label_enriched: float  # share of those whose top-k images are most enriched for it (NaN if none)
    label_topk_rate: float  # mean rate of the finding among those features' top-k images
    base_rate: float  # rate of the finding among the training images
    fired_recall: float  # 4. a feature labelled with the finding fired, on images that have it
    fired_precision: float
    report_recall: float  # the report asserts it, on images that have it
    report_precision: float
    n_asserted: int  # reports asserting it
    weak_stage: str  # the first step where the finding is weak (see weak_stage)


@dataclass
class Audit:
    run_dir: str
    data_root: str
    sae_dir: str
    labels: str
    n_train: int
    n_test: int
    tau: float
    findings: list[FindingAudit] = field(default_factory=list)

    def flagged(self) -> list[str]:
        return [f.finding for f in self.findings if f.sae_loses]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["flagged"] = self.flagged()
        d["thresholds"] = {"probe_min": PROBE_MIN, "sae_slack": SAE_SLACK,
                           "label_recall_min": LABEL_RECALL_MIN, "compose_drop": COMPOSE_DROP}
        return _json_safe(d)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


# -- pieces, each testable on its own -------------------------------------------------------
def feature_aurocs(acts: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of every column of `acts` as a score for 0/1 labels `y` (ties count half); NaN
    for all columns when `y` holds a single class. Mann-Whitney over average ranks."""
    from scipy.stats import rankdata

    pos = np.asarray(y).astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0 or acts.shape[1] == 0:
        return np.full(acts.shape[1], math.nan)
    ranks = rankdata(acts, axis=0)
    return (ranks[pos].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def best_feature(a_train: np.ndarray, y_train: np.ndarray, a_test: np.ndarray,
                 y_test: np.ndarray) -> tuple[int, float, float]:
    """(feature, train AUROC, test AUROC) of the feature with the best AUROC on the training
    split: chosen on train, so that the test number is not flattered by the choice."""
    auc_tr = feature_aurocs(a_train, y_train)
    k = int(np.argmax(np.nan_to_num(auc_tr, nan=-1.0)))
    return k, float(auc_tr[k]), float(feature_aurocs(a_test[:, [k]], y_test)[0])


def sparse_probe_auroc(train_scores: np.ndarray, test_scores: np.ndarray, y_test: np.ndarray,
                       fire_rate: float) -> float:
    """AUROC of the probe turned into a feature that fires on `fire_rate` of the training images:
    max(score - q, 0), with q the training scores' (1 - fire_rate) quantile. What sparsity alone
    costs: a feature that fires this rarely scores every image below its threshold alike."""
    if not 0 < fire_rate <= 1:
        return math.nan
    cut = float(np.quantile(train_scores, 1 - fire_rate))
    return float(feature_aurocs(np.maximum(np.asarray(test_scores) - cut, 0.0)[:, None], y_test)[0])


def gap_stratum(feature: np.ndarray, probe: np.ndarray, y: np.ndarray, others: dict[str, np.ndarray],
                min_class: int = 5) -> dict[str, Any] | None:
    """The finding among `others` whose two strata (images without it, with it) leave the smallest
    largest-within-stratum gap between the probe's and the feature's AUROC, when that gap is at
    most SAE_SLACK; None otherwise. A stratum counts only with at least `min_class` images of
    each class of `y`."""
    best: dict[str, Any] | None = None
    for name, g in others.items():
        strata = []
        for value in (0, 1):
            m = np.asarray(g) == value
            pos = int(np.asarray(y)[m].sum())
            if pos < min_class or int(m.sum()) - pos < min_class:
                break
            f_auc = float(feature_aurocs(np.asarray(feature)[m][:, None], np.asarray(y)[m])[0])
            p_auc = float(feature_aurocs(np.asarray(probe)[m][:, None], np.asarray(y)[m])[0])
            strata.append({"n": int(m.sum()), "positives": pos, "feature": f_auc, "probe": p_auc})
        if len(strata) != 2:
            continue
        worst = max(s["probe"] - s["feature"] for s in strata)
        if worst <= SAE_SLACK and (best is None or worst < best["largest_gap"]):
            best = {"finding": name, "without": strata[0], "with": strata[1], "largest_gap": worst}
    return best


def explain_gap(feature_auroc: float, probe_as_sparse: float, stratum: dict[str, Any] | None) -> str:
    """What a flagged gap comes from: "strata" when a co-occurring finding splits the images into
    strata where the feature and the probe agree (the probe only ranks the strata better, e.g.
    placing images where neither sees the finding above the feature's silence); "sparsity" when
    the probe made as sparse as the feature does no better than the feature; else "" (the SAE's
    feature points elsewhere than the probe: a loss in the SAE itself)."""
    if stratum is not None:
        return "strata"
    if not math.isnan(probe_as_sparse) and feature_auroc >= probe_as_sparse - SAE_SLACK:
        return "sparsity"
    return ""


def recall_precision(truth: np.ndarray, said: np.ndarray) -> tuple[float, float]:
    """recall = |truth & said| / |truth|, precision = |truth & said| / |said| (NaN on 0/0)."""
    truth, said = np.asarray(truth).astype(bool), np.asarray(said).astype(bool)
    tp = int((truth & said).sum())
    rec = tp / int(truth.sum()) if truth.any() else math.nan
    prec = tp / int(said.sum()) if said.any() else math.nan
    return rec, prec


def asserts(text: str | None) -> set[str]:
    """The planted findings a text asserts present (uncertain counts as present)."""
    from bench.metrics.phantom_truth import PRESENT, assertions

    if not text:
        return set()
    return {k for k, v in assertions(text).items() if v == PRESENT}


def weak_stage(f: FindingAudit) -> str:
    """The first step where the finding is weak: absent, encoder, SAE, label, composition or ok."""
    if f.test_pos == 0 or math.isnan(f.probe_auroc):
        return "absent"
    if f.probe_auroc < PROBE_MIN:
        return "encoder"
    if f.sae_loses:
        return "SAE"
    if f.n_label_features == 0 or math.isnan(f.fired_recall) or f.fired_recall < LABEL_RECALL_MIN:
        return "label"
    rr = 0.0 if math.isnan(f.report_recall) else f.report_recall
    if f.fired_recall - rr > COMPOSE_DROP:
        return "composition"
    return "ok"


# -- reading a run --------------------------------------------------------------------------
def _read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    from bench.stages.generate import MANIFEST, PREDICTIONS

    path = run_dir / MANIFEST
    if not path.is_file():
        raise BenchError(f"{run_dir} is not a run directory ({MANIFEST} missing); pass the directory that "
                         "`bench run --system saerad` wrote (e.g. OUT/saerad)")
    try:
        gen = json.loads(path.read_text())["generate"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"{path}: no readable generate section ({exc})") from None
    system = gen.get("system") or {}
    name = system.get("name") or (gen.get("identity") or {}).get("system")
    if name != "saerad":
        raise BenchError(f"{run_dir} is a run of system {name!r}, not saerad: the audit needs an SAE, its feature "
                         "index and labels")
    for key in ("sae_dir", "index_dir", "labels"):
        if not system.get(key):
            raise BenchError(f"{path}: the saerad system record has no {key}; re-run `bench run --system saerad`")
    preds_path = run_dir / PREDICTIONS
    if not preds_path.is_file():
        raise BenchError(f"{run_dir} has no {PREDICTIONS}")
    preds = [json.loads(line) for line in preds_path.read_text().splitlines() if line.strip()]
    if not preds:
        raise BenchError(f"{preds_path} holds no predictions")
    return gen, system, preds


def _planted(root: Path, unit: str) -> pd.DataFrame:
    from bench.data.phantom.findings import FINDINGS
    from bench.data.phantom.generate import LABELS_TABLE

    path = root / LABELS_TABLE
    if not path.is_file():
        raise BenchError(f"{root} has no {LABELS_TABLE}: the run's data is not a phantom dataset, so there are no "
                         "planted findings to audit against")
    table = pd.read_csv(path, dtype={"dicom_id": str, "study_id": str, "subject_id": str, "split": str})
    key = "study_id" if unit == "study" else "dicom_id"
    return table.drop_duplicates(key).set_index(key)[list(FINDINGS)].astype(np.int8)


def _rows(table: pd.DataFrame, ids: Sequence[str], what: str) -> np.ndarray:
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise BenchError(f"{len(missing)} {what} ids are not in the phantom labels (first: {missing[0]}); the run "
                         "was made on other data than its manifest's data root holds now")
    return table.loc[list(ids)].to_numpy()


def audit_run(run_dir: str | Path, cache_dir: str | Path | None = None, device: str = "cpu") -> Audit:
    """Audit one `bench run --system saerad` run directory on phantom data."""
    import torch

    from bench.context import RunContext
    from bench.data.phantom.findings import FINDINGS
    from bench.encoders.probe import probe_scores
    from saerad.features.index import load_index
    from saerad.features.label import load_labels
    from saerad.sae import load_sae

    run_dir = Path(run_dir)
    gen, system, preds = _read_run(run_dir)
    ident = gen.get("identity") or {}
    root = Path(str(ident.get("data_root") or ""))
    unit = str(ident.get("unit") or "image")
    planted = _planted(root, unit)
    opts = system.get("options") or {}
    tau = float(opts.get("tau") or 0.0)
    sae_dir, index_dir, labels_path = Path(system["sae_dir"]), Path(system["index_dir"]), Path(system["labels"])

    # The cache root the run used: its stages live under <cache>/saerad/<stage>-<fingerprint>.
    if cache_dir is None:
        cache_dir = index_dir.parent.parent if index_dir.parent.name == "saerad" else None
    if cache_dir is None:
        from bench.data.default import cache_root

        cache_dir = cache_root()
    ctx = RunContext(data_root=root, dataset_name=str(ident.get("dataset") or "phantom"), cache_dir=Path(cache_dir),
                     work_dir=run_dir, unit=unit, encoder_id=ident.get("encoder"), device=device,
                     limit=ident.get("limit"), progress=False)
    train = ctx.dataset("train").samples
    split = str(ident.get("split") or "test")
    by_id = {s.id: s for s in ctx.dataset(split).samples}  # the harness reader: the run images
    pred_ids = [str(p["id"]) for p in preds]
    lost = [i for i in pred_ids if i not in by_id]
    if lost:
        raise BenchError(f"{len(lost)} predictions name samples that the {split} split of {root} lacks "
                         f"(first: {lost[0]})")
    test = [by_id[i] for i in pred_ids]
    y_train = _rows(planted, [s.id for s in train], "training")
    y_test = _rows(planted, pred_ids, split)

    log.info("audit: tokens of %d training and %d %s images", len(train), len(test), split)
    tok_train, tok_test = ctx.tokens(train, "train"), ctx.tokens(test, split)
    sae = load_sae(sae_dir, device=device)
    with torch.no_grad():
        def acts(t: np.ndarray) -> np.ndarray:
            return np.concatenate([sae.feature_activations(torch.as_tensor(np.asarray(t[i:i + 1024], np.float32),
                                                                           device=device)).cpu().numpy()
                                   for i in range(0, len(t), 1024)])
        a_train, a_test = acts(tok_train), acts(tok_test)
    log.info("audit: linear probes on %d-d tokens", tok_train.shape[1])
    scores = probe_scores(tok_train, {f: y_train[:, j] for j, f in enumerate(FINDINGS)},
                          tok_test, {f: y_test[:, j] for j, f in enumerate(FINDINGS)})

    labels = {fid: r.label for fid, r in load_labels(labels_path).items() if r.status == "labelled" and r.label}
    label_says = {fid: asserts(text) for fid, text in labels.items()}
    index = load_index(index_dir)
    # Training-image row of each index sample, so the top-k images' planted findings can be read.
    idx_rows = _rows(planted, index.samples["dicom_id" if unit == "image" else "study_id"].astype(str).tolist(),
                     "feature-index")
    base = y_train.mean(0)

    texts = [str(p.get("prediction") or "") for p in preds]
    said = np.array([[f in asserts(t) for f in FINDINGS] for t in texts], dtype=bool)
    fired = np.zeros_like(said)
    for i, p in enumerate(preds):
        for feat in (p.get("provenance") or {}).get("active_features") or []:
            for f in asserts(feat.get("description")):
                fired[i, FINDINGS.index(f)] = True

    out = Audit(run_dir=str(run_dir), data_root=str(root), sae_dir=str(sae_dir), labels=str(labels_path),
                n_train=len(train), n_test=len(test), tau=tau)
    for j, name in enumerate(FINDINGS):
        k, auc_tr, auc_te = best_feature(a_train, y_train[:, j], a_test, y_test[:, j])
        sc = scores.get(name)
        p = float(feature_aurocs(sc[1][:, None], y_test[:, j])[0]) if sc is not None else math.nan
        loses = bool(p >= PROBE_MIN and not math.isnan(auc_te) and auc_te < p - SAE_SLACK)
        fire_rate = float((a_train[:, k] > 0).mean())
        as_sparse = sparse_probe_auroc(sc[0], sc[1], y_test[:, j], fire_rate) if sc is not None else math.nan
        stratum = gap_stratum(a_test[:, k], sc[1], y_test[:, j],
                              {g: y_test[:, i] for i, g in enumerate(FINDINGS) if i != j}) if loses else None
        naming = [fid for fid, fs in label_says.items() if name in fs]
        enriched, rates = [], []
        for fid in naming:
            rows = index.top_index[fid]
            rows = rows[rows >= 0]
            if not len(rows):
                continue
            rate = idx_rows[rows].mean(0)
            rates.append(rate[j])
            enrich = np.where(base > 0, rate / np.where(base > 0, base, 1), 0.0)
            enriched.append(bool(enrich[j] >= enrich.max() and rate[j] > 0))
        f_rec, f_prec = recall_precision(y_test[:, j], fired[:, j])
        r_rec, r_prec = recall_precision(y_test[:, j], said[:, j])
        fa = FindingAudit(
            finding=name, train_pos=int(y_train[:, j].sum()), test_pos=int(y_test[:, j].sum()), n_test=len(test),
            probe_auroc=p, feature=k, feature_train_auroc=auc_tr, feature_auroc=auc_te,
            sae_loses=loses, feature_fire_rate=fire_rate, probe_as_sparse=as_sparse, gap_stratum=stratum,
            gap_explained_by=explain_gap(auc_te, as_sparse, stratum) if loses else "",
            feature_label=labels.get(k, ""), feature_label_names=name in label_says.get(k, set()),
            n_label_features=len(naming), label_enriched=float(np.mean(enriched)) if enriched else math.nan,
            label_topk_rate=float(np.mean(rates)) if rates else math.nan, base_rate=float(base[j]),
            fired_recall=f_rec, fired_precision=f_prec, report_recall=r_rec, report_precision=r_prec,
            n_asserted=int(said[:, j].sum()), weak_stage="")
        fa.weak_stage = weak_stage(fa)
        out.findings.append(fa)
    return out


# -- output ---------------------------------------------------------------------------------
def _f(x: float, nd: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _flag(f: FindingAudit) -> str:
    if not f.sae_loses:
        return "-"
    return "**FLAG**" + (f" ({f.gap_explained_by})" if f.gap_explained_by else "")


def markdown(a: Audit) -> str:
    lines = [
        f"_SAE-Rad audit of {a.run_dir}: {a.n_train} training, {a.n_test} test images; labels {Path(a.labels).name}; "
        f"tau {a.tau:g}_",
        "",
        "| finding | test pos. | probe AUROC | SAE feature (AUROC) | SAE loses? | probe as sparse (fires on) "
        "| feature label names it? | labelled features (enriched) | fired R / P | report R / P | weak stage |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in a.findings:
        lab = f"{f.n_label_features}" + (f" ({_f(f.label_enriched)})" if f.n_label_features else "")
        lines.append(
            f"| {f.finding} | {f.test_pos}/{f.n_test} | {_f(f.probe_auroc, 3)} | #{f.feature} ({_f(f.feature_auroc, 3)}) "
            f"| {_flag(f)} | {_f(f.probe_as_sparse, 3)} ({_f(f.feature_fire_rate)}) "
            f"| {'yes' if f.feature_label_names else 'no'} | {lab} "
            f"| {_f(f.fired_recall)} / {_f(f.fired_precision)} | {_f(f.report_recall)} / {_f(f.report_precision)} "
            f"| {f.weak_stage} |")
    flagged = a.flagged()
    lines += ["", ("SAE loses what the encoder carries (probe >= %.2f, best feature < probe - %.2f): %s"
                   % (PROBE_MIN, SAE_SLACK, ", ".join(flagged) if flagged else "none"))]
    for f in a.findings:
        if not f.sae_loses:
            continue
        sparse = (f"the probe made as sparse as the feature (firing on {_f(f.feature_fire_rate)} of training "
                  f"images) scores {_f(f.probe_as_sparse, 3)}")
        st = f.gap_stratum
        if st:
            wo, wi = st["without"], st["with"]
            strata = (f"; without {st['finding']} ({wo['positives']}/{wo['n']} positive) the feature scores "
                      f"{_f(wo['feature'], 3)} and the probe {_f(wo['probe'], 3)}, with it ({wi['positives']}/{wi['n']}) "
                      f"{_f(wi['feature'], 3)} and {_f(wi['probe'], 3)}: the two agree within each stratum")
        else:
            strata = "; no co-occurring finding splits the test images into strata where the two agree"
        verdict = {"strata": "the gap is in how the strata are ranked against each other, not in what the feature sees",
                   "sparsity": "the gap is what firing this rarely costs, not a worse direction",
                   "": "the feature does worse than the probe would at its sparsity: a loss in the SAE"}
        lines.append(f"- {f.finding}: {sparse}{strata}; {verdict[f.gap_explained_by]}.")
    return "\n".join(lines)
