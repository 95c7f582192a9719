"""Train the small phantom encoder shipped in bench/assets/phantom-encoder, and probe it.

The bundled encoder stands in for Rad-DINO on phantom data: a Dinov2 of the same architecture
family, small enough to commit (a few MB) and to run on a laptop CPU. What matters downstream
is that its CLS token carries the planted findings, as Rad-DINO's carries radiological ones.

Objective: supervised multi-label training. A linear head on the CLS token
(`last_hidden_state[:, 0]`, the very token the harness caches) predicts the 0/1 planted-finding
labels of the phantom train split with a binary cross-entropy loss; the head is discarded and
only the backbone is saved. The test split is never seen in training.

Training data are phantom studies generated exactly as the harness's embedded default
dataset is (bench.data.phantom.generate, 256 px JPEGs, read by the MIMIC reader) but from
other seeds (1 and 2 by default), so that the default dataset (seed 0) stays unseen. All
training images are decoded once into a uint8 tensor at the encoder's input size.

Afterwards the script encodes the embedded default dataset's train and test splits through
bench.encoders (the same loader, image processor and cache as every user of the encoder) and
reports the linear-probe AUROC per finding: logistic regression on train CLS tokens, AUROC on
test CLS tokens.

    python scripts/train_phantom_encoder.py                       # generate, train, save, probe
    python scripts/train_phantom_encoder.py --probe-only          # probe the committed weights

See docs/phantom-encoder.md for the time it takes and the numbers it gives.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.encoders import PHANTOM_ENCODER_DIR, encode_dataset, load_encoder, load_tokens, probe_auroc  # noqa: E402

log = logging.getLogger("train_phantom_encoder")


@dataclass
class TrainConfig:
    image_size: int = 128
    # 4x4 patches of 32 px: 17 tokens keep a step cheap on a shared CPU, while the 128 px
    # input still resolves a nodule (~4 px across) inside its patch embedding.
    patch_size: int = 32
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 3
    mlp_ratio: int = 4
    epochs: int = 2  # stage 1 of docs/phantom-encoder.md; later stages pass --init-from
    max_minutes: float = 30.0  # stop early (after the current epoch) once this is spent
    # Stop after this many epochs while keeping the learning-rate schedule of `epochs` (0: off).
    # Replays, deterministically, a run that the time budget cut short.
    stop_after_epochs: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    augment: bool = True  # random shifts and exposure changes of the training images
    seed: int = 0
    # One intra-op thread: on a CPU shared with other jobs, two OpenMP threads spin-wait on each
    # other and ran 5x slower than one (measured: 5 vs 24 images/s at 96 px).
    threads: int = 1
    log_every: int = 100  # steps between loss lines
    # Start from this saved encoder instead of a random one ("" = from scratch): a second
    # stage with its own warm-up and cosine schedule continues a run in another process.
    init_from: str = ""
    # Weight of a multiple-instance loss on the patch tokens (0 = off): a linear head scores
    # every patch for every finding, the scores are pooled over patches with a soft maximum,
    # and the pooled score is trained on the image's labels. A finding a few pixels across
    # changes one or two patches; this loss lets those patches learn to flag it, which the
    # CLS-only loss did not teach in the CPU time available (nodule and rib fracture stayed
    # at chance). The CLS head's loss is unchanged; the harness still uses only the CLS token.
    mil_weight: float = 0.0
    mil_sharpness: float = 4.0  # r of the log-sum-exp pooling (1/r) log mean exp(r s); large r -> max
    # Weight of a per-patch loss for the findings in `located` (0 = off). Their pixels are known:
    # the generator is re-run for each positive training image with and without the finding
    # (neither draws random numbers, so everything else is identical), and a patch is a positive
    # where the two differ. The patch tokens are told where the nodule or fracture is, which is
    # far more signal than one image-level bit; the CLS loss still decides what the CLS carries.
    located_weight: float = 0.0
    located: str = "nodule,rib_fracture"

    def located_names(self) -> list[str]:
        """The findings the per-patch loss supervises; none when that loss is off."""
        return [n for n in self.located.split(",") if n] if self.located_weight > 0 else []


# --- data -------------------------------------------------------------------------------------


def _generate(args: tuple[Path, int, int]) -> None:
    root, n_train, seed = args
    from bench.data.phantom import generate

    generate(root, n_train=n_train, n_test=0, seed=seed, image_size=256)


def ensure_training_data(work_dir: Path, n_train: int, seeds: list[int]) -> list[Path]:
    """One phantom train split of `n_train` studies per seed (generated in parallel if missing)."""
    from concurrent.futures import ProcessPoolExecutor

    roots = [work_dir / f"train-n{n_train}-s{seed}" for seed in seeds]
    todo = [(r, n_train, s) for r, s in zip(roots, seeds) if not (r / "phantom-labels.csv.gz").is_file()]
    if todo:
        log.info("generating %d phantom train studies for each of seeds %s", n_train, [t[2] for t in todo])
        with ProcessPoolExecutor(len(todo)) as pool:
            list(pool.map(_generate, todo))
    if 0 in seeds:
        log.warning("seed 0 is the embedded default dataset's seed; its train images are not the probe's "
                    "test images, but pick other seeds to keep the default dataset entirely unseen")
    return roots


def split_with_labels(root: Path, split: str) -> tuple[list, pd.DataFrame]:
    """The split's samples (frontal images, as the harness reads them) and their 0/1 labels."""
    from bench.data.mimic import load_split

    ds = load_split(root, split)
    labels = read_labels(root)
    missing = [s.dicom_id for s in ds.samples if s.dicom_id not in labels.index]
    if missing:
        raise SystemExit(f"{len(missing)} {split} images have no row in phantom-labels.csv.gz")
    # Rows are looked up by dicom_id, so labels follow the reader's sample order exactly.
    return ds.samples, labels.loc[[s.dicom_id for s in ds.samples]]


def read_labels(root: Path) -> pd.DataFrame:
    """phantom-labels.csv.gz as a 0/1 frame indexed by dicom_id, one column per finding."""
    df = pd.read_csv(root / "phantom-labels.csv.gz", dtype={"dicom_id": str, "study_id": str,
                                                             "subject_id": str})
    from bench.data.phantom.findings import FINDINGS

    return df.set_index("dicom_id")[list(FINDINGS)].astype(np.int64)


def load_pixels(samples: list, size: int) -> torch.Tensor:
    """All images as uint8 (N, size, size), resized and centre-cropped as the processor does."""
    out = np.empty((len(samples), size, size), dtype=np.uint8)
    for k, s in enumerate(samples):
        with Image.open(s.image_path) as im:
            im = im.convert("L")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
            left, top = (im.width - size) // 2, (im.height - size) // 2
            out[k] = np.asarray(im.crop((left, top, left + size, top + size)))
    return torch.from_numpy(out)


def augment(batch: torch.Tensor, rng: torch.Generator,
            masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Small shifts and exposure changes on float images in [0, 1] (B, H, W).

    `masks` (B, C, H, W), if given, are shifted with their images. No flips: left and right
    carry meaning (effusion side, pacemaker position).
    """
    b, h, w = batch.shape
    pad = max(2, h // 32)  # up to ~3 % of the width: the generator already varies pose a little
    padded = torch.nn.functional.pad(batch[:, None], (pad, pad, pad, pad), mode="replicate")[:, 0]
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=rng)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=rng)
    shifted = torch.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    if masks is not None:
        mp = torch.nn.functional.pad(masks, (pad, pad, pad, pad))
        masks = torch.stack([mp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    gamma = torch.exp(torch.randn(b, 1, 1, generator=rng) * 0.15)
    contrast = 1 + torch.randn(b, 1, 1, generator=rng) * 0.1
    out = shifted.clamp(1e-4, 1) ** gamma
    out = (out - 0.5) * contrast + 0.5
    return out.clamp(0, 1), masks


def finding_masks(root: Path, seed: int, n_train: int, names: list[str], image_size: int,
                  wanted: set[str]) -> dict[str, np.ndarray]:
    """dicom_id -> (len(names), image_size, image_size) 0/1 masks of `names` in a generated train split.

    Re-runs the generator's plan for the split (bench.data.phantom.generate's order of random
    draws) and paints each positive frontal image twice, with and without each finding; the
    finding's pixels are where the two differ by more than 8 grey levels. Only findings that
    draw no random numbers while painted can be isolated this way (nodule, rib fracture).
    `image_size` must be the size the split was generated at (256), or the check against the
    JPEGs on disk stops the run.
    """
    from bench.data.phantom.anatomy import Nuisance, Painter
    from bench.data.phantom.findings import assign_ids, sample_split
    from bench.data.phantom.generate import SPLITS, _SPLIT_CODE, study_dir

    n_validate = max(1, round(0.05 * n_train))
    by_split = {s: sample_split(s, {"train": n_train, "validate": n_validate, "test": 0}[s], seed) for s in SPLITS}
    assign_ids([st for s in SPLITS for st in by_split[s]], seed)
    painter = Painter(image_size)
    out: dict[str, np.ndarray] = {}
    for index, st in enumerate(by_split["train"]):
        if st.frontal_dicom not in wanted or not any(n in st.findings for n in names):
            continue
        def paint(findings):
            rng = np.random.default_rng([seed, 404, _SPLIT_CODE["train"], index, 0])
            nz = Nuisance.sample(rng, st.subject.width, st.subject.height)
            return painter.frontal(rng, findings, nz, ap=st.view == "AP").astype(np.int16)
        full = paint(st.findings)
        if len(out) < 3:  # the re-run must reproduce the written image (up to JPEG error)
            with Image.open(study_dir(root, st.subject_id, st.study_id) / f"{st.frontal_dicom}.jpg") as im:
                err = float(np.abs(np.asarray(im.convert("L"), dtype=np.int16) - full).mean())
            if err > 3:
                raise SystemExit(f"re-painted {st.frontal_dicom} differs from its JPEG by {err:.1f} grey levels "
                                 "on average: the generator's plan was not reproduced")
        mask = np.zeros((len(names), image_size, image_size), dtype=np.uint8)
        for c, name in enumerate(names):
            if name in st.findings:
                without = paint({k: v for k, v in st.findings.items() if k != name})
                mask[c] = np.abs(full - without) > 8
        out[st.frontal_dicom] = mask
    return out


# --- training ---------------------------------------------------------------------------------


def build_model(cfg: TrainConfig):
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_ratio * cfg.hidden_size,
        image_size=cfg.image_size, patch_size=cfg.patch_size, layerscale_value=1.0,
    )
    return Dinov2Model(config)


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    warm = max(1, int(cfg.warmup_frac * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def mil_pool(scores: torch.Tensor, r: float) -> torch.Tensor:
    """Log-sum-exp pooling over patches (B, P, F) -> (B, F): between the mean (r -> 0) and the max."""
    return (torch.logsumexp(r * scores, dim=1) - math.log(scores.shape[1])) / r


def constant_loss(y: torch.Tensor, loss_fn: torch.nn.Module) -> float:
    """The loss of the best constant predictor: what a model that learned nothing reaches."""
    p = y.mean(0).clamp(1e-4, 1 - 1e-4)
    w = loss_fn.pos_weight
    q = w * p / (w * p + 1 - p)  # the minimiser of the weighted BCE for a constant output
    return float(loss_fn(torch.logit(q).expand_as(y), y))


def train(pixels: torch.Tensor, labels: np.ndarray, mean: float, std: float, cfg: TrainConfig,
          masks: dict[int, torch.Tensor] | None = None):
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = torch.Generator().manual_seed(cfg.seed)
    if cfg.init_from:
        from transformers import Dinov2Model

        model = Dinov2Model.from_pretrained(cfg.init_from, dtype=torch.float32)
        log.info("continuing from the encoder in %s", cfg.init_from)
    else:
        model = build_model(cfg)
    head = torch.nn.Linear(cfg.hidden_size, labels.shape[1])
    params = list(model.parameters()) + list(head.parameters())
    # Extra heads are built only when their loss is on: building one draws from torch's random
    # state and would change every later draw (and so the runs documented without it).
    if cfg.mil_weight > 0:
        patch_head = torch.nn.Linear(cfg.hidden_size, labels.shape[1])
        params += list(patch_head.parameters())
    masks = masks or {}
    located = cfg.located_names()
    if located:
        located_head = torch.nn.Linear(cfg.hidden_size, len(located))
        params += list(located_head.parameters())
        # Finding pixels touch a few patches of a few % of images: weight positives as above.
        p = cfg.patch_size
        n_pos = sum(float(torch.nn.functional.max_pool2d(m[None].float(), p, p).sum()) for m in masks.values())
        frac = max(n_pos, 1.0) / (len(pixels) * len(located) * (cfg.image_size // p) ** 2)
        located_loss = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(math.sqrt((1 - frac) / frac)))
        log.info("located findings %s: masks for %d images, %.4f of patch targets positive", located,
                 len(masks), frac)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    # Rare findings would be ignored under plain BCE; weight positives by the class imbalance.
    y = torch.from_numpy(labels).float()
    prevalence = y.mean(0).clamp(1e-3, 1 - 1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=((1 - prevalence) / prevalence).sqrt())
    floor = constant_loss(y, loss_fn)
    log.info("loss of the best constant predictor: %.4f (a model that learns must go below it)", floor)

    n = len(pixels)
    steps_per_epoch = n // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    started, step, history = time.perf_counter(), 0, []
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=rng)
        running, window = 0.0, 0.0
        for k in range(steps_per_epoch):
            idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            x = pixels[idx].float() / 255.0
            m = None
            if located:
                m = torch.zeros(len(idx), len(located), x.shape[1], x.shape[2])
                for row, i in enumerate(idx.tolist()):
                    if i in masks:
                        m[row] = masks[i].float()
            if cfg.augment:
                x, m = augment(x, rng, m)
            x = ((x - mean) / std)[:, None].expand(-1, 3, -1, -1)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, cfg)
            hidden = model(pixel_values=x).last_hidden_state
            loss = loss_fn(head(hidden[:, 0]), y[idx])
            if cfg.mil_weight > 0:
                loss = loss + cfg.mil_weight * loss_fn(mil_pool(patch_head(hidden[:, 1:]), cfg.mil_sharpness), y[idx])
            if located:
                # Patch targets: does the finding touch this patch? (max over the patch's pixels)
                p = cfg.patch_size
                target = torch.nn.functional.max_pool2d(m, p, p).flatten(2).transpose(1, 2)  # (B, P, C)
                loss = loss + cfg.located_weight * located_loss(located_head(hidden[:, 1:]), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            running += loss.item()
            window += loss.item()
            step += 1
            if cfg.log_every and step % cfg.log_every == 0:
                elapsed = time.perf_counter() - started
                log.info("step %d/%d  loss %.4f  %.0f images/s", step, total, window / cfg.log_every,
                         step * cfg.batch_size / elapsed)
                window = 0.0
        minutes = (time.perf_counter() - started) / 60
        history.append({"epoch": epoch + 1, "loss": running / steps_per_epoch, "minutes": minutes})
        log.info("epoch %d/%d  loss %.4f  %.1f min", epoch + 1, cfg.epochs, running / steps_per_epoch, minutes)
        if cfg.stop_after_epochs and epoch + 1 >= cfg.stop_after_epochs:
            log.info("stopping after epoch %d as asked (schedule planned for %d)", epoch + 1, cfg.epochs)
            break
        if minutes > cfg.max_minutes and epoch + 1 < cfg.epochs:
            log.warning("time budget of %.0f min spent: stopping after epoch %d", cfg.max_minutes, epoch + 1)
            break
    model.eval()
    return model, history, floor


def save(model, out: Path, cfg: TrainConfig, mean: float, std: float, info: dict) -> None:
    from transformers import BitImageProcessor

    out.mkdir(parents=True, exist_ok=True)
    # fp16 on disk halves the size; load_encoder holds the weights in float32 again.
    model.half().save_pretrained(out, safe_serialization=True)
    model.float()
    BitImageProcessor(
        do_resize=True, size={"shortest_edge": cfg.image_size}, resample=Image.BICUBIC,
        do_center_crop=True, crop_size={"height": cfg.image_size, "width": cfg.image_size},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[mean] * 3, image_std=[std] * 3, do_convert_rgb=True,
    ).save_pretrained(out)
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")


# --- probe ------------------------------------------------------------------------------------


def probe(encoder_dir: Path, root: Path, cache_dir: Path) -> dict[str, float]:
    enc = load_encoder(encoder_dir, device="cpu", dtype="float32")
    tokens, labels = {}, {}
    for split in ("train", "test"):
        samples, lab = split_with_labels(root, split)
        report = encode_dataset(samples, enc, cache_dir, batch_size=64, progress=False)
        log.info("%s: %s", split, report.summary())
        ids = [s.dicom_id for s in samples]
        tokens[split] = load_tokens(cache_dir, enc.fingerprint, ids)
        labels[split] = lab
    train_labels = {c: labels["train"][c].to_numpy() for c in labels["train"].columns}
    test_labels = {c: labels["test"][c].to_numpy() for c in labels["test"].columns}
    return probe_auroc(tokens["train"], train_labels, tokens["test"], test_labels)


def table(result: dict[str, float], root: Path) -> str:
    labels = {s: split_with_labels(root, s)[1] for s in ("train", "test")}
    lines = ["| finding | train positives | test positives | probe AUROC |", "|---|---|---|---|"]
    for name, auc in result.items():
        lines.append(f"| {name} | {int(labels['train'][name].sum())} | {int(labels['test'][name].sum())} "
                     f"| {auc:.3f} |")
    vals = [v for v in result.values() if not math.isnan(v)]
    lines.append(f"| **mean** | | | **{np.mean(vals):.3f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from bench.data.default import PhantomDefault, cache_root, embedded_default_root

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/phantom-encoder-work"),
                    help="where the generated training data and the probe's token cache go")
    ap.add_argument("--out", type=Path, default=PHANTOM_ENCODER_DIR)
    ap.add_argument("--n-train", type=int, default=10000, help="phantom train studies per data seed")
    ap.add_argument("--data-seeds", default="1,2", help="comma-separated generator seeds of the training data")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="harness cache holding the embedded default dataset (default: the harness's own)")
    ap.add_argument("--probe-only", action="store_true", help="skip training; probe --out as it is")
    for f, v in asdict(TrainConfig()).items():
        if isinstance(v, bool):
            ap.add_argument(f"--{f.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=v)
        else:
            ap.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    # The probe runs on the embedded default dataset, the very data the harness encodes.
    probe_root = embedded_default_root(args.cache_dir or cache_root(), PhantomDefault())
    if not args.probe_only:
        cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
        seeds = [int(x) for x in args.data_seeds.split(",") if x.strip()]
        roots = ensure_training_data(args.work_dir, args.n_train, seeds)
        t0 = time.perf_counter()
        parts = [split_with_labels(r, "train") for r in roots]
        samples = [s for smp, _ in parts for s in smp]
        labels = pd.concat([lab for _, lab in parts])
        pixels = load_pixels(samples, cfg.image_size)
        log.info("decoded %d train images in %.0f s", len(pixels), time.perf_counter() - t0)
        # Normalisation constants of the training images, saved in the processor config.
        mean = float(pixels.float().mean() / 255)
        std = float(pixels.float().std() / 255)
        masks = {}
        if names := cfg.located_names():
            row_of = {s.dicom_id: k for k, s in enumerate(samples)}
            for root, seed in zip(roots, seeds):
                found = finding_masks(root, seed, args.n_train, names, cfg.image_size, set(row_of))
                masks.update({row_of[d]: torch.from_numpy(m) for d, m in found.items()})
            log.info("painted finding masks for %d images", len(masks))
        model, history, floor = train(pixels, labels.to_numpy(), mean, std, cfg, masks)
        info = {"objective": "supervised multi-label BCE, linear head on the CLS token (discarded)",
                "config": asdict(cfg), "data": {"n_train_studies_per_seed": args.n_train, "data_seeds": seeds,
                                                "train_images": len(samples), "findings": list(labels.columns)},
                "constant_predictor_loss": floor, "history": history, "torch": torch.__version__}
        save(model, args.out, cfg, mean, std, info)
        log.info("saved to %s", args.out)
    result = probe(args.out, probe_root, args.work_dir / "tokens")
    print(table(result, probe_root))
    (args.work_dir / "probe.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
