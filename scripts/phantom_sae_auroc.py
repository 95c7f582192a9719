"""Does an SAE over the phantom encoder's tokens have a feature for every planted finding?

Steps (each one the harness's own code path):

1. Encode the embedded default phantom dataset's train and test splits (frontal images, the
   MIMIC reader) with the bundled encoder, through `bench.context.RunContext` and the token
   cache, exactly as a harness run does; write them as `train_tokens.npy` / `test_tokens.npy`.
2. Train a hybrid-gated SAE on the train tokens with `bench sae train` (a subprocess, so the
   command in the docs is the one that ran) and evaluate it with `bench sae eval --json` on
   both splits: L0 and explained variance.
3. For each planted finding (`phantom-labels.csv.gz`, looked up by dicom_id), score every SAE
   feature's activation f_i = h_i ||W_dec[:, i]|| as a classifier by AUROC. The feature is
   *chosen on the train split* (highest train AUROC) and its *test* AUROC is reported, so the
   choice among thousands of features does not flatter the test number; the best test AUROC
   over all features is given beside it as an upper bound. A linear probe on the raw tokens
   (`bench.encoders.probe_auroc`) is the reference.

Writes <out>/results.json, <out>/table.md and the bar chart (--plot).

    python scripts/phantom_sae_auroc.py --out /tmp/sae-phantom --plot docs/img/sae-phantom-auroc.png
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

log = logging.getLogger("phantom_sae_auroc")


@dataclass
class SaeSettings:
    """The `bench sae train` options used (a short CPU run over ~2,000 tokens of d = 192)."""

    expansion: int = 16
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    l1: float = 2.0  # tokens are layer-normed (c ~ 1): 8e-3, the 768-d recipe, gave L0 ~ 250
    seed: int = 0

    def cli_args(self) -> list[str]:
        return ["--arch", "hybrid-gated", "--expansion", str(self.expansion), "--steps", str(self.steps),
                "--batch-size", str(self.batch_size), "--lr", str(self.lr), "--l1", str(self.l1),
                "--seed", str(self.seed), "--log-every", str(max(1, self.steps // 20)),
                "--checkpoint-every", str(self.steps)]


@dataclass
class FindingResult:
    finding: str
    test_positives: int
    feature: int  # chosen on the train split
    train_auroc: float
    test_auroc: float
    frequency: float  # fraction of test images on which the chosen feature fires
    frequency_pos: float  # ... among the test images that have the finding
    best_test_feature: int  # the best feature judged on the test split itself (optimistic)
    best_test_auroc: float
    probe_auroc: float  # logistic regression on the raw tokens


def encode_splits(out: Path, cache_dir: Path | None, encoder: str) -> tuple[Path, dict[str, list[str]]]:
    """Encode train and test of the embedded default dataset; returns its root and the ids."""
    from bench.context import RunContext
    from bench.data.default import cache_root, embedded_default_root

    cache = cache_dir or cache_root()
    root = embedded_default_root(cache)
    ctx = RunContext(data_root=root, dataset_name="phantom", cache_dir=cache, work_dir=out,
                     encoder_id=encoder, device="cpu", batch_size=64, progress=False)
    ids = {}
    for split in ("train", "test"):
        samples = ctx.dataset(split).samples
        tokens = ctx.tokens(samples, split)
        np.save(out / f"{split}_tokens.npy", tokens.astype(np.float32))
        ids[split] = [s.dicom_id for s in samples]
        (out / f"{split}_ids.txt").write_text("\n".join(ids[split]) + "\n")
        log.info("%s: %d tokens of dim %d", split, *tokens.shape)
    (out / "encoder.json").write_text(json.dumps(ctx.used, indent=1, default=str) + "\n")
    return root, ids


def read_labels(root: Path, ids: list[str]) -> pd.DataFrame:
    from bench.data.phantom.findings import FINDINGS

    df = pd.read_csv(root / "phantom-labels.csv.gz", dtype={"dicom_id": str}).set_index("dicom_id")
    missing = [i for i in ids if i not in df.index]
    if missing:
        raise SystemExit(f"{len(missing)} images have no row in phantom-labels.csv.gz (first: {missing[0]})")
    return df.loc[ids, list(FINDINGS)].astype(np.int64)


def bench_cmd(*args: str) -> list[str]:
    """`bench ...` through this interpreter, so it runs in the same environment."""
    return [sys.executable, "-c", "from bench.cli import main; main()", *args]


def run(cmd: list[str], threads: int, capture: bool = False) -> str:
    log.info("$ OMP_NUM_THREADS=%d %s", threads, " ".join(["bench", *cmd[3:]]) if cmd[1] == "-c" else " ".join(cmd))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, check=True, text=True, capture_output=capture, cwd=REPO, env=env)
    return done.stdout if capture else ""


def feature_aurocs(acts: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of every column of `acts` as a score for the 0/1 labels `y` (ties count half).

    The Mann-Whitney form over average ranks: one sort per feature, no loop over thresholds.
    """
    from scipy.stats import rankdata

    pos = y.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(acts.shape[1], math.nan)
    ranks = rankdata(acts, axis=0)
    return (ranks[pos].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def analyse(sae_dir: Path, tokens: dict[str, np.ndarray], labels: dict[str, pd.DataFrame]) -> list[FindingResult]:
    import torch

    from bench.encoders import probe_auroc
    from saerad.sae.checkpoint import load_sae

    sae = load_sae(sae_dir, "cpu")
    with torch.no_grad():
        acts = {s: sae.feature_activations(torch.from_numpy(t)).numpy() for s, t in tokens.items()}
    probe = probe_auroc(tokens["train"], {c: labels["train"][c].to_numpy() for c in labels["train"]},
                        tokens["test"], {c: labels["test"][c].to_numpy() for c in labels["test"]})
    results = []
    for name in labels["train"].columns:
        y_train, y_test = labels["train"][name].to_numpy(), labels["test"][name].to_numpy()
        auc_train = np.nan_to_num(feature_aurocs(acts["train"], y_train), nan=0.0)
        auc_test = np.nan_to_num(feature_aurocs(acts["test"], y_test), nan=0.0)
        k = int(np.argmax(auc_train))
        best = int(np.argmax(auc_test))
        fires = acts["test"][:, k] > 0
        results.append(FindingResult(
            finding=name, test_positives=int(y_test.sum()), feature=k, train_auroc=float(auc_train[k]),
            test_auroc=float(auc_test[k]), frequency=float(fires.mean()),
            frequency_pos=float(fires[y_test == 1].mean()), best_test_feature=best,
            best_test_auroc=float(auc_test[best]), probe_auroc=float(probe[name])))
    return results


def table(results: list[FindingResult]) -> str:
    lines = ["| finding | test pos. | feature | train AUROC | **test AUROC** | fires on (all / positives) "
             "| best-on-test feature (AUROC) | linear probe |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.finding} | {r.test_positives} | {r.feature} | {r.train_auroc:.3f} | **{r.test_auroc:.3f}** "
                     f"| {100 * r.frequency:.1f}% / {100 * r.frequency_pos:.1f}% | {r.best_test_feature} "
                     f"({r.best_test_auroc:.3f}) | {r.probe_auroc:.3f} |")
    mean = lambda f: float(np.mean([getattr(r, f) for r in results]))  # noqa: E731
    lines.append(f"| **mean** | | | {mean('train_auroc'):.3f} | **{mean('test_auroc'):.3f}** | | "
                 f"({mean('best_test_auroc'):.3f}) | {mean('probe_auroc'):.3f} |")
    return "\n".join(lines)


def plot(results: list[FindingResult], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.finding.replace("_", " ") for r in results]
    x = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.bar(x - 0.2, [r.test_auroc for r in results], 0.4, label="best SAE feature (chosen on train)")
    ax.bar(x + 0.2, [r.probe_auroc for r in results], 0.4, label="linear probe on the CLS token")
    ax.axhline(0.9, color="k", ls="--", lw=0.8)
    ax.axhline(0.5, color="grey", ls=":", lw=0.8)
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("test AUROC")
    ax.set_title(f"Phantom findings: SAE feature vs linear probe ({subtitle})", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/sae-phantom"), help="work directory (tokens, SAE, results)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="harness cache (default: the harness's own)")
    ap.add_argument("--encoder", default="phantom", help="encoder alias, hub id or directory")
    ap.add_argument("--plot", type=Path, default=None, help="PNG bar chart of the per-finding AUROCs")
    # One thread: on a CPU shared with other jobs, two OpenMP threads spin-wait on each other;
    # `bench sae train` with two took over 10 minutes for what one thread does in under 2.
    ap.add_argument("--threads", type=int, default=1, help="torch threads here and in the bench subprocesses")
    for f, v in asdict(SaeSettings()).items():
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    settings = SaeSettings(**{f: getattr(args, f) for f in asdict(SaeSettings())})
    import torch

    torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    root, ids = encode_splits(out, args.cache_dir, args.encoder)
    tokens = {s: np.load(out / f"{s}_tokens.npy") for s in ("train", "test")}
    labels = {s: read_labels(root, ids[s]) for s in ("train", "test")}

    sae_dir = out / "sae"
    run(bench_cmd("sae", "train", "--tokens", str(out / "train_tokens.npy"), "--out", str(sae_dir),
                  *settings.cli_args()), args.threads)
    quality = {}
    for split in ("train", "test"):
        text = run(bench_cmd("sae", "eval", "--sae", str(sae_dir), "--tokens", str(out / f"{split}_tokens.npy"),
                             "--plots", str(out / f"eval-{split}"), "--json"), args.threads, capture=True)
        quality[split] = json.loads(text[text.index("{"):])
        log.info("%s: L0 %.2f, explained variance %.3f, dead %d/%d", split, quality[split]["l0"],
                 quality[split]["explained_variance"], quality[split]["dead_features"], quality[split]["d_sae"])

    results = analyse(sae_dir, tokens, labels)
    md = table(results)
    print(md)
    (out / "table.md").write_text(md + "\n")
    keep = ("l0", "explained_variance", "mse", "dead_features", "dense_features", "d_sae", "n_tokens")
    (out / "results.json").write_text(json.dumps({
        "sae_settings": asdict(settings), "encoder": args.encoder,
        "quality": {s: {k: q.get(k) for k in keep} for s, q in quality.items()},
        "findings": [asdict(r) for r in results]}, indent=1) + "\n")
    if args.plot:
        q = quality["test"]
        plot(results, args.plot, f"hybrid-gated x{settings.expansion}, test L0 {q['l0']:.1f}, "
                                  f"EV {100 * q['explained_variance']:.1f}%")
        log.info("wrote %s", args.plot)


if __name__ == "__main__":
    main()
