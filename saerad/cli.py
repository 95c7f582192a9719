"""`bench features ...`: build, inspect and label the feature index of an SAE.

The harness mounts ``features_app`` as ``bench features`` (entry point ``features`` in the group
``saerad_bench.commands``). Library code logs; only this module prints. DIR below is a
directory holding a feature index (feature_index.*): an SAE checkpoint directory, or a
`bench run --system saerad` cache stage (its path is in the run manifest).

Errors: commands raise ``bench.errors.BenchError`` (the SAE library's ``SAEError`` is
re-raised as one by ``bench_errors``), which the `bench` command prints as one line and turns
into exit code 2; run on its own, ``BenchErrorGroup`` does the same (see saerad/sae_cli.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from bench.errors import BenchError
from saerad.sae_cli import BenchErrorGroup, bench_errors

features_app = typer.Typer(help="SAE feature index: top images, reports, labels.", no_args_is_help=True,
                           cls=BenchErrorGroup)
log = logging.getLogger(__name__)


@features_app.command("index")
@bench_errors
def index_cmd(
    sae: Path = typer.Option(..., "--sae", help="SAE checkpoint directory (the index is written beside it)"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="dataset root; default: the embedded phantom"),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="encoder the SAE was trained on"),
    k: int = typer.Option(10, "--k", help="top images per feature"),
    chunk_size: int = typer.Option(1024, "--chunk-size", help="images per activation chunk"),
    device: Optional[str] = typer.Option(None, "--device"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="token cache root"),
) -> None:
    """Build the feature index of an SAE over the training split (tokens from the shared cache)."""
    from bench.context import RunContext
    from bench.data.default import cache_root, embedded_default_root
    from bench.devices import check_device
    from saerad.features.index import build_index
    from saerad.sae import load_sae

    if device is not None:
        device = check_device(device)  # before the data and the encoder are loaded
    root = Path(data_root) if data_root else embedded_default_root(cache_dir)
    from bench.data.readers import detect

    name = detect(root)  # the reader the data root's files call for (MIMIC-CXR, IU-Xray, ...)
    ctx = RunContext(data_root=root, dataset_name=name, cache_dir=cache_dir or cache_root(), work_dir=sae,
                     encoder_id=encoder, device=device)
    train = ctx.dataset("train")
    tokens = ctx.tokens(train.samples, "train")
    model = load_sae(sae, device=device or "cpu")
    idx = build_index(model, tokens, train.samples, k=k, chunk_size=chunk_size, device=device or "cpu",
                      meta={"sae_dir": str(sae), "data_root": str(root),
                            "train_fingerprint": train.fingerprint})
    idx.save(sae)
    typer.echo(f"feature index of {idx.d_sae} features over {idx.n_images} images written to {sae}")


SAE_HELP = "directory holding the feature index, or a `bench run --system saerad` run directory"


def _index_source(path: Path) -> tuple[Path, Path | None]:
    """(directory of the feature index, the labels file a run used or None) for --sae.

    A run directory's manifest names the cached stages it used, which live under the cache
    root with hashed names; accepting the run directory saves looking them up."""
    import json

    if (path / "feature_index.json").is_file() or not (path / "manifest.json").is_file():
        return path, None  # load_index reports a directory without an index
    try:
        system = json.loads((path / "manifest.json").read_text())["generate"]["system"]
        index_dir = Path(system["index_dir"])
    except (ValueError, KeyError, TypeError):
        raise BenchError(f"{path} is a run directory but its manifest names no feature index "
                         "(not a finished `bench run --system saerad` run?); pass the index directory") from None
    labels = system.get("labels")
    return index_dir, Path(labels) if labels else None


@features_app.command("show")
@bench_errors
def show(
    feature: Optional[int] = typer.Argument(None, help="feature id (default: list the features that fire most often)"),
    sae: Path = typer.Option(..., "--sae", help=SAE_HELP),
    labels: Optional[Path] = typer.Option(None, "--labels", help="labels file (default: the run's, else the newest "
                                          "labels-*.json in DIR)"),
    width: int = typer.Option(300, "--width", help="characters of each report to show (0: all)"),
    top: int = typer.Option(20, "--top", help="without a feature id: how many features to list"),
) -> None:
    """Print a feature's statistics, label and top images with their reports; without a feature
    id, the features that fire on the most training images."""
    from rich.console import Console
    from rich.table import Table

    from saerad.features.index import load_index
    from saerad.features.label import load_labels

    index_dir, run_labels = _index_source(sae)
    idx = load_index(index_dir)
    lab_path = labels or run_labels or _newest_labels(index_dir)
    recs = load_labels(lab_path) if lab_path else {}
    con = Console()
    if feature is None:
        _show_ranked(con, idx, recs, top)
        return
    top_images = idx.top(feature)
    st = idx.stats(feature)
    rec = recs.get(feature)
    con.print(f"[bold]feature {feature}[/bold]  fires on {st['n_active']} of {idx.n_images} training images "
              f"({100 * st['frequency']:.2f}%), max {st['max']:.4g}, mean when active {st['mean_active']:.4g}")
    if rec is not None:
        con.print(f"label ({rec.method}, {rec.status}): [green]{rec.label or '-'}[/green]")
    if not top_images:
        con.print("it never fires on the training images, so it has no top images; "
                  f"`bench features show --sae {sae}` lists the features that fire")
        return
    table = Table("rank", "activation", "dicom_id", "report")
    for r, (s, act) in enumerate(top_images, 1):
        text = " ".join(str(s["report"]).split())
        table.add_row(str(r), f"{act:.4g}", s["dicom_id"], text if width <= 0 else text[:width])
    con.print(table)


def _show_ranked(con, idx, recs: dict, top: int) -> None:
    import numpy as np
    from rich.table import Table

    firing = int(np.count_nonzero(idx.freq))
    con.print(f"{firing} of {idx.d_sae} features fire on at least one of {idx.n_images} training images; "
              f"the {min(top, firing)} that fire most often:")
    table = Table("feature", "fires on", "max", "label")
    for f in np.argsort(-idx.freq, kind="stable")[:min(top, firing)]:
        st = idx.stats(int(f))
        rec = recs.get(int(f))
        table.add_row(str(f), f"{st['n_active']} ({100 * st['frequency']:.1f}%)", f"{st['max']:.4g}",
                      (rec.label or f"({rec.status})") if rec is not None else "")
    con.print(table)


def _newest_labels(directory: Path) -> Path | None:
    files = sorted(Path(directory).glob("labels-*.json"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


@features_app.command("grid")
@bench_errors
def grid(
    feature: int = typer.Argument(..., help="feature id"),
    sae: Path = typer.Option(..., "--sae", help=SAE_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG path (default: DIR/feature-ID.png)"),
    cols: int = typer.Option(5, "--cols"),
) -> None:
    """Save the feature's top training images as a PNG grid (the paper's Figure 2 view)."""
    from saerad.features.grid import save_grid
    from saerad.features.index import load_index

    idx = load_index(_index_source(sae)[0])
    if not idx.top(feature):
        raise BenchError(f"feature {feature} never fires on the training images, so there is nothing to draw; "
                         f"`bench features show --sae {sae}` lists the features that fire")
    path = save_grid(idx, feature, out or Path(sae) / f"feature-{feature}.png", cols=cols)
    typer.echo(str(path))


@features_app.command("label")
@bench_errors
def label(
    sae: Path = typer.Option(..., "--sae", help="directory holding the feature index"),
    llm: str = typer.Option("none", "--llm", help="none (LLM-free), openai:URL, anthropic, gguf[:PATH]"),
    model: Optional[str] = typer.Option(None, "--model", help="the LLM's model name"),
    prompt: Optional[Path] = typer.Option(None, "--prompt", help="replacement prompt file (needs {reports})"),
    retries: int = typer.Option(2, "--retries", help="follow-ups for replies without the '*This feature represents' line"),
    features: Optional[str] = typer.Option(None, "--features", help="comma-separated ids (default: all)"),
    out: Optional[Path] = typer.Option(None, "--out", help="labels file (default: DIR/labels-<method>.json)"),
    corpus_root: Optional[Path] = typer.Option(None, "--data-root",
                                               help="dataset whose training reports form the LLM-free labeller's corpus "
                                                    "(default: the reports stored in the index)"),
    cache: Optional[Path] = typer.Option(None, "--llm-cache", help="LLM response cache (SQLite file)"),
) -> None:
    """Label features from their top reports (the paper's LLM method, or LLM-free)."""
    from saerad.features.index import load_index
    from saerad.features.label import LexicalLabeller, LLMLabeller, label_index, save_labels, status_counts

    idx = load_index(sae)
    ids = _parse_feature_ids(features)
    if llm.strip().lower() == "none":
        if corpus_root:
            from bench.data.mimic import load_split

            corpus = [s.findings for s in load_split(corpus_root, "train").samples]
        else:
            corpus = idx.samples["report"].tolist()
        labeller = LexicalLabeller(corpus)
        method = "lexical"
    else:
        from bench.data.default import cache_root
        from bench.llm import make_client

        client = make_client(llm, model, cache or cache_root() / "llm" / "responses.sqlite", use="saerad")
        labeller = LLMLabeller(client, prompt, retries=retries)
        method = "llm"
    recs = label_index(idx, labeller, ids)
    path = save_labels(out or Path(sae) / f"labels-{method}.json", recs,
                       meta={"method": method, "llm": llm, "model": model,
                             "prompt_file": str(prompt) if prompt else None})
    typer.echo(f"{status_counts(recs)} -> {path}")


def _parse_feature_ids(text: str | None) -> list[int] | None:
    """--features: comma-separated feature ids; None (all features) when not given."""
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError as e:
        raise BenchError(f"--features: {e}; write comma-separated feature ids, e.g. 1,2,3") from None


@features_app.command("audit")
@bench_errors
def audit(
    run: Path = typer.Option(..., "--run", help="a `bench run --system saerad` run directory on phantom data"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write the markdown table (or JSON with --json) here"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of the markdown table"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir",
                                             help="token cache root (default: the one the run's stages live in)"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Per planted finding: encoder probe -> SAE feature -> label -> composed report; where it is lost."""
    import json

    from bench.devices import check_device
    from saerad.audit import audit_run, markdown

    result = audit_run(run, cache_dir=cache_dir, device=check_device(device))
    text = json.dumps(result.to_json(), indent=1) if as_json else markdown(result)
    typer.echo(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
