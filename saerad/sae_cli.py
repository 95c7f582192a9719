"""`bench sae ...`: train, evaluate and benchmark sparse autoencoders.

The harness mounts ``app`` as ``bench sae`` (entry point ``sae`` in the group
``saerad_bench.commands``). Library code logs; only this module prints.

Errors: the SAE library raises its own ``saerad.sae.SAEError``; every command here re-raises
it as ``bench.errors.BenchError`` (``bench_errors``), which the `bench` command prints as one
line and turns into exit code 2. Commands raise rather than print and exit themselves, so
that mounted under `bench` the harness alone decides how a user error looks; only when this
app is itself the root command (tests, embedding) does ``BenchErrorGroup`` do the same.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional, ParamSpec, Sequence, TypeVar

import typer
from typer.core import TyperGroup

from bench.errors import BenchError
from saerad.sae.errors import SAEError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def bench_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Re-raise the SAE library's errors as BenchError, the harness's user-facing error.

    Put it under ``@app.command()``: functools.wraps keeps the signature typer reads the
    options from. The SAEError stays attached as ``__cause__`` for debugging.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except SAEError as e:
            raise BenchError(str(e)) from e

    return wrapper


class BenchErrorGroup(TyperGroup):
    """A command group that, when it is the root command, reports BenchError like `bench`:
    one line on stderr and exit code 2.

    Mounted under `bench` (``add_typer``) only the root group's ``main`` runs, so this adds
    nothing there and the harness maps the error itself; run on its own (``CliRunner``, or
    an embedding program) the app would otherwise end in a traceback.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        except BenchError as e:
            if not standalone_mode:
                raise  # the caller asked to handle errors itself, as `bench` does
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            sys.exit(2)


app = typer.Typer(help="Sparse autoencoders over encoder CLS tokens (SAE-Rad).", no_args_is_help=True,
                  cls=BenchErrorGroup)


SPLIT_HELP = "instead of --tokens: the CLS tokens of this split of the dataset (--data-root), encoded into the token cache if missing"
DATA_ROOT_HELP = "with --split: the dataset; default: the embedded phantom"
REPORTS_HELP = "with --split: report tree or zip (default: found under --data-root)"
ENCODER_HELP = "with --split: encoder (default: the dataset's, as `bench run`)"
CACHE_HELP = "with --split: the cache root (default $SAERAD_BENCH_CACHE or ~/.cache/saerad-bench)"


def _parse_options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are read as JSON when they parse (numbers, true/false, null)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise BenchError(f"bad --sae-option {item!r}: write KEY=VALUE, e.g. k=32")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _read_config_file(path: Path) -> dict[str, Any]:
    """The --config file: a JSON object of TrainConfig fields."""
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"--config file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise BenchError(f"--config file {path} is not JSON ({e})") from None
    if not isinstance(values, dict):
        raise BenchError(f"--config file {path} must hold a JSON object of TrainConfig fields")
    return values


@app.command()
@bench_errors
def train(
    tokens: Optional[Path] = typer.Option(None, "--tokens", help="training tokens: .npy, .safetensors or a token-cache fingerprint directory"),
    out: Path = typer.Option(..., "--out", help="checkpoint directory (created; resumed with --resume)"),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_HELP),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    reports: Optional[Path] = typer.Option(None, "--reports", help=REPORTS_HELP),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=ENCODER_HELP),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help=CACHE_HELP),
    arch: Optional[str] = typer.Option(None, "--arch", help="hybrid-gated (default), gated, standard, april-update, topk"),
    expansion: Optional[int] = typer.Option(None, "--expansion", help="d_sae = expansion * d_in (default 64)"),
    d_sae: Optional[int] = typer.Option(None, "--d-sae", help="number of features; overrides --expansion"),
    l1: Optional[float] = typer.Option(None, "--l1", help="sparsity coefficient lambda after warm-up (default 8e-3)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="optimisation steps (default 200000)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="tokens per step (default 2048)"),
    lr: Optional[float] = typer.Option(None, "--lr", help="peak learning rate (default 5e-5)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="initialisation and data-order seed (default 0)"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ..."),
    fast: Optional[bool] = typer.Option(None, "--fast/--no-fast", help="fast hybrid-gated step (default on)"),
    log_every: Optional[int] = typer.Option(None, "--log-every"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every"),
    sae_option: list[str] = typer.Option([], "--sae-option", help="architecture option KEY=VALUE, e.g. k=32 for topk (repeatable)"),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of TrainConfig fields; command-line options override it"),
    ids: Optional[Path] = typer.Option(None, "--ids", help="file of dicom_ids (one per line) selecting rows of a token cache"),
    resume: bool = typer.Option(False, "--resume", help="continue the run saved in --out (its saved config is the base)"),
    eval_tokens: int = typer.Option(65536, "--eval-tokens", help="training tokens for the final metrics and density plot (0: skip)"),
    target_l0: Optional[float] = typer.Option(None, "--target-l0", help="find lambda giving this mean L0 (active features per token) before training; --l1 is then the search's start"),
    target_l0_tolerance: Optional[float] = typer.Option(None, "--target-l0-tolerance", help="relative tolerance on the L0 (default 0.15)"),
    target_l0_trials: Optional[int] = typer.Option(None, "--target-l0-trials", help="budget of calibration trials (default 12)"),
    target_l0_steps: Optional[int] = typer.Option(None, "--target-l0-steps", help="steps per calibration trial (default: the whole run)"),
) -> None:
    """Train an SAE with the SAE-Rad recipe; writes weights, config, metrics and plots to --out."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bench.devices import check_device
    from saerad.sae.checkpoint import load_metrics, read_config, save_metrics
    from saerad.sae.metrics import evaluate_sae
    from saerad.sae.plots import plot_feature_density, plot_loss_curves
    from saerad.sae.tokens import iter_token_chunks
    from saerad.sae.trainer import TrainConfig, Trainer

    values: dict[str, Any] = {}
    if resume and (out / "train_state.pt").is_file():
        values.update(read_config(out)["train_config"] or {})
    if config is not None:
        values.update(_read_config_file(config))
    given = {"arch": arch, "expansion": expansion, "d_sae": d_sae, "l1_coeff": l1,
             "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
             "fast": fast, "log_every": log_every, "checkpoint_every": checkpoint_every,
             "target_l0": target_l0, "target_l0_tolerance": target_l0_tolerance,
             "target_l0_trials": target_l0_trials, "target_l0_steps": target_l0_steps}
    values.update({k: v for k, v in given.items() if v is not None})
    if sae_option:
        values["sae_options"] = {**values.get("sae_options", {}), **_parse_options(sae_option)}
    cfg = TrainConfig.from_dict(values)
    check_device(cfg.device)
    token_array = _token_source(tokens, ids, split, data_root, reports, encoder, cache_dir)
    trainer = Trainer(cfg, token_array, out, resume=resume)
    cfg = trainer.config  # with --target-l0, it carries the lambda found
    if trainer.calibration is not None and trainer.step == 0:
        cal = trainer.calibration
        typer.echo(f"target L0 {cal.target:g}: lambda {cal.l1_coeff:.4g} (L0 {cal.l0:.3g}) after "
                   f"{len(cal.trials)} trials of {cal.trial_steps} steps, {cal.seconds:.1f} s")

    columns = (TextColumn("[bold]SAE[/]"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("train", total=cfg.steps, completed=trainer.step, status="")

        def on_step(step: int, record: dict[str, Any] | None) -> None:
            status = None
            if record is not None:
                status = f"loss {record['loss']:.4g}  L0 {record['l0']:.1f}  EV {record['explained_variance']:.3f}"
            progress.update(task, completed=step, **({"status": status} if status else {}))

        sae = trainer.train(on_step=on_step)

    metrics = load_metrics(out)
    if trainer.history:
        plot_loss_curves(trainer.history, out / "loss_curves.png")
    if eval_tokens > 0:
        report = evaluate_sae(sae, iter_token_chunks(token_array[:eval_tokens]))
        metrics["eval_train_subset"] = report.to_dict()
        save_metrics(out, metrics)
        plot_feature_density(report.feature_frequency, out / "feature_density.png",
                             title=f"{sae.arch}, {report.n_tokens} training tokens")
        typer.echo(_format_report(report.to_dict()))
    if trainer.calibration is not None and trainer.calibration.final_l0 is not None:
        typer.echo(f"final L0 {trainer.calibration.final_l0:.3g} (target {trainer.calibration.target:g}, "
                   f"lambda {trainer.calibration.l1_coeff:.4g})")
    typer.echo(f"saved {sae.arch} SAE ({sae.d_in} -> {sae.d_sae}) to {out}")


def _token_source(tokens: Path | None, ids: Path | None, split: str | None, data_root: Path | None,
                  reports: Path | None, encoder: str | None, cache_dir: Path | None):
    """The tokens of --tokens (rows chosen by --ids) or of --split of a dataset; exactly one of the two."""
    from saerad.harness_tokens import load_split_tokens, load_tokens, read_ids_file

    if (tokens is None) == (split is None):
        raise BenchError("give the tokens as --tokens FILE_OR_CACHE_DIR or as --split SPLIT "
                         "(of --data-root, default the embedded phantom), one of the two")
    if split is not None:
        if ids is not None:
            raise BenchError("--ids selects rows of --tokens; with --split the split's samples are the rows")
        return load_split_tokens(split, data_root, reports, encoder, cache_dir)
    if any(v is not None for v in (data_root, reports, encoder, cache_dir)):
        raise BenchError("--data-root, --reports, --encoder and --cache-dir go with --split, not --tokens")
    return load_tokens(tokens, read_ids_file(ids) if ids is not None else None)


def _format_report(d: dict[str, Any]) -> str:
    return (f"L0 {d['l0']:.2f}  explained variance {100 * d['explained_variance']:.2f}%  "
            f"MSE {d['mse']:.4g}  dead {d['dead_features']}/{d['d_sae']}  "
            f"dense (>{d['dense_threshold']:g}) {d['dense_features']}  over {d['n_tokens']} tokens")


@app.command("eval")
@bench_errors
def evaluate(
    sae_dir: Path = typer.Option(..., "--sae", help="SAE checkpoint directory"),
    tokens: Optional[Path] = typer.Option(None, "--tokens", help="evaluation tokens: .npy, .safetensors or a token-cache directory"),
    ids: Optional[Path] = typer.Option(None, "--ids", help="file of dicom_ids selecting rows of a token cache"),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_HELP),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help=DATA_ROOT_HELP),
    reports: Optional[Path] = typer.Option(None, "--reports", help=REPORTS_HELP),
    encoder: Optional[str] = typer.Option(None, "--encoder", help=ENCODER_HELP),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help=CACHE_HELP),
    batch_size: int = typer.Option(4096, "--batch-size"),
    dense_threshold: float = typer.Option(0.1, "--dense-threshold", help="a feature firing on more than this fraction of tokens is dense"),
    plots: Optional[Path] = typer.Option(None, "--plots", help="directory for PNG plots (default: <sae>/eval)"),
    device: str = typer.Option("cpu", "--device"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
) -> None:
    """L0, explained variance, MSE, dead and dense features; density histogram and loss curves."""
    from bench.devices import check_device
    from saerad.sae.checkpoint import load_metrics, load_sae
    from saerad.sae.metrics import evaluate_sae
    from saerad.sae.plots import plot_feature_density, plot_loss_curves
    from saerad.sae.tokens import iter_token_chunks

    sae = load_sae(sae_dir, check_device(device))
    token_array = _token_source(tokens, ids, split, data_root, reports, encoder, cache_dir)
    report = evaluate_sae(sae, iter_token_chunks(token_array, batch_size), dense_threshold)
    plot_dir = plots if plots is not None else sae_dir / "eval"
    plot_dir.mkdir(parents=True, exist_ok=True)
    result = report.to_dict()
    result["arch"] = sae.arch
    result["density_plot"] = str(plot_feature_density(
        report.feature_frequency, plot_dir / "feature_density.png",
        title=f"{sae.arch}, {tokens.name if tokens is not None else f'{split} split'}"))
    history = load_metrics(sae_dir).get("history")
    if history:
        result["loss_curves_plot"] = str(plot_loss_curves(history, plot_dir / "loss_curves.png"))
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        typer.echo(_format_report(result))
        typer.echo(f"plots in {plot_dir}")


@app.command()
@bench_errors
def bench(
    batch: int = typer.Option(2048, "--batch", help="the paper's batch size"),
    d_in: int = typer.Option(768, "--d-in"),
    expansion: int = typer.Option(64, "--expansion"),
    l0: float = typer.Option(15.0, "--l0", help="target mean active features per input"),
    repeats: int = typer.Option(3, "--repeats"),
    device: str = typer.Option("cpu", "--device"),
    dtype: str = typer.Option("float32", "--dtype", help="float32, or bfloat16 (CUDA autocast)"),
    details: bool = typer.Option(False, "--details"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Time one hybrid-gated training step: fast path vs dense autograd reference."""
    from bench.devices import check_device

    device = check_device(device)
    try:
        from saerad.sae.benchmark import format_benchmark, run_benchmark
    except ImportError as e:
        raise BenchError(f"the SAE speed benchmark is not available here ({e})") from None
    result = run_benchmark(batch=batch, d_in=d_in, expansion=expansion, l0=l0, repeats=repeats,
                           device=device, dtype=dtype, details=details)
    typer.echo(json.dumps(result, indent=1) if as_json else format_benchmark(result))
