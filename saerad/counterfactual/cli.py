"""`bench counterfactual ...`: train the token-conditioned diffusion model, draw Figure-4 panels,
measure the checks and localisation, save difference-map masks (docs/counterfactual.md).

Mounted as `bench counterfactual` (entry point ``counterfactual`` in the group
``saerad_bench.commands``). Library code logs; only this module prints. Errors are BenchError
(one line, exit code 2), as for the other SAE-Rad command groups.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from bench.errors import BenchError
from saerad.sae_cli import BenchErrorGroup, bench_errors

counterfactual_app = typer.Typer(help="Counterfactual images of SAE features: a diffusion model conditioned on CLS "
                                      "tokens, feature interventions, localisation.",
                                 no_args_is_help=True, cls=BenchErrorGroup)
log = logging.getLogger(__name__)

DataRoot = typer.Option(None, "--data-root", help="dataset root; default: the embedded phantom")
Reports = typer.Option(None, "--reports", help="MIMIC-CXR reports (zip or files/ tree) when not under --data-root")
Encoder = typer.Option(None, "--encoder", help="encoder whose CLS tokens condition the model (default: the dataset's)")
CacheDir = typer.Option(None, "--cache-dir", help="cache root (tokens, SAE-Rad stages)")
Device = typer.Option("cpu", "--device")
ModelDir = typer.Option(None, "--model", help="diffusion checkpoint directory (default: the bundled phantom model)")
SaeDir = typer.Option(None, "--sae", help="SAE checkpoint directory (default: SAE-Rad's SAE on this dataset)")
Steps = typer.Option(10, "--steps", help="sampling steps of the DDIM scheduler (the setting docs/counterfactual.md "
                                         "measures; DDPM always takes all 1,000)")
Scheduler = typer.Option("ddim", "--scheduler", help="ddim (fast, deterministic) or ddpm (the full chain)")
Seed = typer.Option(0, "--seed", help="noise seed: every image of one panel starts from the same noise")
ImageId = typer.Option(None, "--image", help="dicom_id of an image of the split (default: one with --finding)")
Feature = typer.Option(None, "--feature", help="SAE feature id (default: the best detector of --finding)")
Finding = typer.Option(None, "--finding", help="phantom finding whose best feature to use (default pacemaker)")
Beta = typer.Option(None, "--beta", help="code of the added feature (default: its training maximum)")
Split = typer.Option("test", "--split")


@counterfactual_app.command("train")
@bench_errors
def train(
    out: Path = typer.Option(..., "--out", help="checkpoint directory (an interrupted run resumes from it)"),
    preset: str = typer.Option("phantom", "--preset", help="phantom (64 px, CPU) or mimic (the paper's App. D recipe)"),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON object of settings that replace the preset's "
                                          "(any field of saerad/counterfactual/config.py)"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="stop after this many more steps (resume later)"),
    data_root: Optional[Path] = DataRoot, reports: Optional[Path] = Reports, encoder: Optional[str] = Encoder,
    cache_dir: Optional[Path] = CacheDir,
    device: str = Device,
) -> None:
    """Train the diffusion model on the training split's images and CLS tokens."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from bench.cli.common import console
    from bench.devices import check_device
    from bench.jsonfiles import read_json
    from saerad.counterfactual import checkpoint as ck
    from saerad.counterfactual.config import DiffusionConfig
    from saerad.counterfactual.config import preset as make_preset
    from saerad.counterfactual.data import load_split_data, open_context
    from saerad.counterfactual.train import DiffusionTrainer

    check_device(device)
    overrides = read_json(config, "diffusion config") if config else {}
    if not isinstance(overrides, dict):
        raise BenchError(f"{config} must hold a JSON object of diffusion settings")
    overrides.update({k: v for k, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)) if v is not None})
    cfg = DiffusionConfig.from_dict({**make_preset(preset).to_dict(), **overrides})
    ctx = open_context(data_root, cache_dir, encoder, device, work_dir=out, reports=reports)
    data = load_split_data(ctx, "train", cfg.image_size)
    trainer = DiffusionTrainer(cfg, data, out, ck.encoder_meta(ctx.encoder()), device)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("diffusion", total=trainer.total_steps, info="")

        def progress(step: int, total: int, rec: dict[str, Any]) -> None:
            info = f"loss {rec['loss']:.4f}, {rec['images_per_s']:.1f} img/s"
            if "val_loss" in rec:
                info += f", val {rec['val_loss']:.4f}"
            bar.update(task, completed=step, info=info)

        trainer.train(progress=progress, max_steps=max_steps)
    state = "trained" if trainer.step >= trainer.total_steps else f"stopped at step {trainer.step} (run again to resume)"
    typer.echo(f"{state}: {trainer.step}/{trainer.total_steps} steps; model in {out}, loss curve {out / ck.LOSS_PLOT}")


def open_generator(data_root, encoder, cache_dir, device, model_dir, sae_dir, steps, scheduler, seed, reports=None):
    from saerad.counterfactual.data import open_context
    from saerad.counterfactual.evaluate import Generator
    from saerad.counterfactual.sample import SCHEDULERS
    from saerad.counterfactual.sources import diffusion_model, open_sae

    if scheduler not in SCHEDULERS:
        raise BenchError(f"--scheduler {scheduler!r}: choose one of {', '.join(SCHEDULERS)}")
    if steps < 1:
        raise BenchError(f"--steps must be at least 1, got {steps}")
    ctx = open_context(data_root, cache_dir, encoder, device, reports=reports)
    model, _, mdir = diffusion_model(ctx, model_dir, device)
    if scheduler == "ddpm":  # the full chain: every training timestep
        steps = model.cfg.num_train_timesteps
    src = open_sae(ctx, sae_dir, device)
    return ctx, Generator(model, src.sae, ctx.encoder(), steps, scheduler, seed), src, mdir


def choose_target(ctx, src, image: Optional[str], feature: Optional[int], finding: Optional[str], split: str):
    """(sample, feature, finding) from the options; on a phantom the defaults are the pacemaker's best
    feature and the first image of the split that has a pacemaker."""
    from saerad.counterfactual.data import find_sample
    from saerad.counterfactual.intervene import check_feature
    from saerad.counterfactual.truth import best_feature, planted

    samples = ctx.evaluation_dataset().samples if split == "test" else ctx.dataset(split).samples
    phantom = (Path(ctx.data_root) / "phantom.json").exists()
    if feature is None:
        if finding is None:
            if not phantom:
                raise BenchError("give --feature I (or, on a phantom dataset, --finding NAME)")
            finding = "pacemaker"
        feature = best_feature(ctx, src.sae, finding).feature
    check_feature(src.sae, feature)
    if image is None:
        if phantom and finding is not None:
            table = planted(ctx.data_root)
            with_it = [s for s in samples if table.at[s.dicom_id, finding] == 1]
            sample = (with_it or samples)[0]
        else:
            sample = samples[0]
    else:
        sample = samples[find_sample(samples, image)]
    return sample, feature, finding


@counterfactual_app.command("show")
@bench_errors
def show(
    image: Optional[str] = ImageId, feature: Optional[int] = Feature, finding: Optional[str] = Finding,
    beta: Optional[float] = Beta,
    out: Optional[Path] = typer.Option(None, "--out", help="PNG path (default: counterfactual-<image>-f<feature>.png)"),
    split: str = Split,
    model_dir: Optional[Path] = ModelDir, sae_dir: Optional[Path] = SaeDir, steps: int = Steps,
    scheduler: str = Scheduler, seed: int = Seed, data_root: Optional[Path] = DataRoot, reports: Optional[Path] = Reports,
    encoder: Optional[str] = Encoder, cache_dir: Optional[Path] = CacheDir, device: str = Device,
) -> None:
    """Write the paper's Figure 4 row for one image and one feature."""
    ctx, gen, src, _ = open_generator(data_root, encoder, cache_dir, device, model_dir, sae_dir, steps, scheduler, seed,
                                  reports)
    sample, feature, finding = choose_target(ctx, src, image, feature, finding, split)
    path = draw_panel(ctx, gen, src, sample, feature, finding, beta,
                      out or Path(f"counterfactual-{sample.dicom_id[:8]}-f{feature}.png"))
    typer.echo(str(path))


def draw_panel(ctx, gen, src, sample, feature: int, finding: Optional[str], beta: Optional[float], path: Path) -> Path:
    """The Figure 4 row of one image and feature; the finding's true mask outlined on a phantom."""
    import torch

    from saerad.counterfactual.data import read_image, to_pixels
    from saerad.counterfactual.evaluate import difference, reduce_mask
    from saerad.counterfactual.intervene import default_beta
    from saerad.counterfactual.panel import save_panel

    b = beta if beta is not None else default_beta(src.maxima, feature)
    z = torch.as_tensor(ctx.tokens([sample], "counterfactual"))
    p = gen.panel(z, feature, b)
    size = gen.model.cfg.image_size
    truth = None
    if finding and (Path(ctx.data_root) / "phantom.json").exists():
        from bench.data.phantom.masks import PhantomMasks

        m = PhantomMasks(ctx.data_root).masks(sample.dicom_id, [finding]).get(finding)
        truth = reduce_mask(m, size) if m is not None else None
    label = src.label(feature)
    title = f"{sample.dicom_id[:17]}...  feature {feature}" + (f" ({label})" if label else "") + f", beta {b:.3g}"
    return save_panel(path, read_image(sample.image_path, size),
                      *(to_pixels(p[k])[0] for k in ("reconstruction", "added", "removed")),
                      difference(p["added"], p["removed"])[0], title, truth)


@counterfactual_app.command("mask")
@bench_errors
def mask(
    image: Optional[str] = ImageId, feature: Optional[int] = Feature, finding: Optional[str] = Finding,
    beta: Optional[float] = Beta,
    threshold: float = typer.Option(0.5, "--threshold", help="keep pixels whose difference is at least this share of the maximum"),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG path (default: mask-<image>-f<feature>.png)"),
    split: str = Split,
    model_dir: Optional[Path] = ModelDir, sae_dir: Optional[Path] = SaeDir, steps: int = Steps,
    scheduler: str = Scheduler, seed: int = Seed, data_root: Optional[Path] = DataRoot, reports: Optional[Path] = Reports,
    encoder: Optional[str] = Encoder, cache_dir: Optional[Path] = CacheDir, device: str = Device,
) -> None:
    """Unsupervised segmentation: the thresholded difference map of a feature, saved as a mask PNG."""
    import torch
    from PIL import Image

    from saerad.counterfactual.evaluate import difference
    from saerad.counterfactual.intervene import default_beta
    from saerad.counterfactual.panel import save_mask

    if not 0.0 < threshold <= 1.0:
        raise BenchError(f"--threshold must be in (0, 1], got {threshold}")
    ctx, gen, src, _ = open_generator(data_root, encoder, cache_dir, device, model_dir, sae_dir, steps, scheduler, seed,
                                  reports)
    sample, feature, _ = choose_target(ctx, src, image, feature, finding, split)
    b = beta if beta is not None else default_beta(src.maxima, feature)
    p = gen.panel(torch.as_tensor(ctx.tokens([sample], "counterfactual")), feature, b)
    with Image.open(sample.image_path) as im:
        size = im.size[0]
    path, share = save_mask(out or Path(f"mask-{sample.dicom_id[:8]}-f{feature}.png"),
                            difference(p["added"], p["removed"])[0], threshold, size)
    typer.echo(f"{path} ({100 * share:.1f}% of the image)")


@counterfactual_app.command("eval")
@bench_errors
def evaluate(
    findings: Optional[str] = typer.Option(None, "--findings", help="phantom findings, comma-separated (default on a "
                                           "phantom: pacemaker,sternotomy_wires,cardiomegaly)"),
    features: Optional[str] = typer.Option(None, "--features", help="feature ids, comma-separated (checks only)"),
    n: int = typer.Option(50, "--n", help="images per finding or feature"),
    beta: Optional[float] = typer.Option(None, "--beta", help="for --features (default: each feature's training maximum)"),
    dilate: int = typer.Option(1, "--dilate", help="pixels the truth mask is grown by for the pointing game"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the result as JSON here (and .md beside it)"),
    model_dir: Optional[Path] = ModelDir, sae_dir: Optional[Path] = SaeDir,
    steps: int = Steps, scheduler: str = Scheduler, seed: int = Seed,
    data_root: Optional[Path] = DataRoot, reports: Optional[Path] = Reports, encoder: Optional[str] = Encoder,
    cache_dir: Optional[Path] = CacheDir,
    device: str = Device,
) -> None:
    """Effectiveness, reversibility, composition (with 95% intervals) and, on a phantom, localisation."""
    from saerad.counterfactual.report import markdown, run_eval
    from saerad.counterfactual.truth import DEFAULT_FINDINGS, check_finding

    if n < 1:
        raise BenchError(f"--n must be at least 1, got {n}")
    ids = _ints(features, "--features")
    names = [f.strip() for f in findings.split(",") if f.strip()] if findings else []
    for name in names:
        check_finding(name)
    ctx, gen, src, mdir = open_generator(data_root, encoder, cache_dir, device, model_dir, sae_dir, steps, scheduler, seed,
                                  reports)
    if not names and not ids:
        if not (Path(ctx.data_root) / "phantom.json").exists():
            raise BenchError("give --features I,J (or, on a phantom dataset, --findings)")
        names = list(DEFAULT_FINDINGS)
    result = run_eval(gen, ctx, src, names, ids, n, dilate, beta)
    result.settings["model_dir"] = str(mdir)
    text = markdown(result)
    typer.echo(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_json(), indent=1, default=_json_default) + "\n")
        out.with_suffix(".md").write_text(text + "\n")


def _ints(text: Optional[str], flag: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise BenchError(f"{flag}: {e}; write comma-separated feature ids, e.g. 3,17") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)
