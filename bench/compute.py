"""`bench compute`: the paper's compute comparison (its Appendix F, Table 4), measured for our
runs beside the figures quoted for SAE-Rad, CheXagent and MAIRA-2.

What is measured, per run directory (its manifest.json and the models it names):

- training images: the training split the run's system read (the manifest's dataset record);
- parameters: counted from the models (`numel` of every parameter), split into those the
  system trains and those it runs at inference (a frozen encoder is run, not trained);
- FLOPs: counted by torch.utils.flop_counter.FlopCounterMode on the models' own forward
  (and, for training, backward) passes. Training = encoding each training image once plus
  the system's own training steps (SAE-Rad: its SAE's loss and backward on one batch, times
  the steps it was trained for; optimiser updates are not counted). Inference per report =
  encoding one image plus what the system does with the token (SAE features; nn's search
  over the training tokens). An LLM the system calls is not in the FLOPs: its tokens per
  report are given instead, from the run's own LLM usage record;
- wall time per report: the run's generate time over the reports it generated, on the
  device the manifest names; training wall time: its fit time.

A system says which models it runs through an optional class method,
`compute_parts(manifest) -> list[Part]`; the encoder named in the manifest is counted here.
A system without it (a user's external command, say) gets "n/a" with that reason. Every
cell says whether it was measured here or quoted, and quoted figures keep their source.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.errors import BenchError

log = logging.getLogger(__name__)

MEASURED, QUOTED, UNAVAILABLE = "measured", "quoted", "n/a"
TERA = 1e12


@dataclass
class Part:
    """One model a system runs, with what it costs."""

    name: str
    params: int  # parameters run at inference
    trained_params: int  # of those, the ones the system trained (0 for a frozen model)
    infer_flops: float  # per report
    train_flops: float  # in all, for training
    note: str = ""
    out_dim: int = 0  # width of what it outputs (the encoder's token), for the parts after it


@dataclass
class Cell:
    value: float | None
    kind: str  # MEASURED, QUOTED or UNAVAILABLE
    note: str = ""  # the reason for n/a, or how a value was obtained

    def text(self, fmt: Callable[[float], str]) -> str:
        if self.kind == UNAVAILABLE or self.value is None:
            return f"n/a ({self.note})" if self.note else "n/a"
        return f"{fmt(self.value)} ({self.kind})"


@dataclass
class Column:
    label: str
    cells: dict[str, Cell] = field(default_factory=dict)
    source: str = ""


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of everything `fn` runs in torch (a multiply-add counts 2), by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def encoder_part(encoder_name: str, n_train: int) -> Part:
    """The frozen encoder: one image's forward at the processor's input size, counted on CPU."""
    import torch
    from PIL import Image

    from bench.encoders import load_encoder

    enc = load_encoder(encoder_name, device="cpu", dtype="float32")
    pixels = enc.preprocess([Image.new("L", (64, 64))])
    with torch.inference_mode():
        flops = count_flops(lambda: enc.model(pixel_values=pixels))
    params = sum(p.numel() for p in enc.model.parameters())
    side = "x".join(str(s) for s in pixels.shape[-2:])
    return Part("encoder", params, 0, float(flops), float(flops) * n_train,
                f"{encoder_name}, frozen, {side} input; training = one forward per training image", enc.dim)


ROWS: list[tuple[str, str, Callable[[float], str]]] = [
    ("training_images", "Training images", lambda v: f"{int(v):,}"),
    ("trained_parameters", "Trained parameters", lambda v: _si(v)),
    ("inference_parameters", "Parameters run per report", lambda v: _si(v)),
    ("training_tflops", "Training TFLOPs", lambda v: _sig(v)),
    ("inference_tflops_per_report", "Inference TFLOPs per report (no LLM)", lambda v: _sig(v)),
    ("wall_s_per_report", "Wall time per report (s)", lambda v: _sig(v)),
    ("training_wall_s", "Training wall time (s)", lambda v: _sig(v)),
    ("llm_tokens_per_report", "LLM tokens per report (prompt + completion)", lambda v: _sig(v)),
    ("llm_label_tokens", "LLM tokens to label the features (once)", lambda v: f"{int(v):,}"),
    ("training_cost_usd", "Training cost (USD)", lambda v: f"${v:,.5g}"),
    ("inference_cost_usd_per_report", "Inference cost per report (USD)", lambda v: f"${v:.5g}"),
]


def _sig(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _si(v: float) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{int(v)}"


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "manifest.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{run_dir} is not a run directory (no manifest.json); run `bench generate` first") from None
    except ValueError as e:
        raise BenchError(f"{path} is not valid JSON ({e})") from None
    gen = doc.get("generate")
    if not isinstance(gen, dict) or "identity" not in gen:
        raise BenchError(f"{path} has no generate section; was the run generated by this harness?")
    return gen


def _parts(gen: dict[str, Any]) -> tuple[list[Part] | None, str]:
    """The system's parts and the encoder's; (None, reason) when they cannot be counted."""
    from bench.registry import systems
    from bench.systems.base import System

    name = gen["identity"]["system"]
    try:
        cls = systems.load_class(name, System)
    except BenchError as e:
        return None, str(e)
    hook = getattr(cls, "compute_parts", None)
    if hook is None:
        return None, f"system {name!r} declares no compute_parts"
    parts: list[Part] = []
    encoder = (gen.get("encoder") or {}).get("model")
    if encoder:
        n_train = int(((gen.get("datasets") or {}).get("train") or {}).get("n", 0))
        try:
            parts.append(encoder_part(encoder, n_train))
        except BenchError as e:  # weights not here: say which and how to get them
            return None, f"encoder not countable: {e}"
    try:
        parts += hook({**gen, "encoder_dim": parts[0].out_dim if parts else 0})
    except BenchError as e:
        return None, str(e)
    return parts, ""


def measure_run(run_dir: Path) -> Column:
    gen = read_manifest(run_dir)
    ident = gen["identity"]
    label = ident.get("label") or ident["system"]
    col = Column(label if label == Path(run_dir).name else f"{label} ({Path(run_dir).name})")
    c = col.cells
    enc = gen.get("encoder") or {}
    device = enc.get("device_name") or enc.get("device") or "device not recorded"
    n_train = ((gen.get("datasets") or {}).get("train") or {}).get("n")
    c["training_images"] = Cell(n_train, MEASURED, "training split read") if n_train is not None else \
        Cell(None, UNAVAILABLE, "the system read no training split")
    parts, why = _parts(gen)
    if parts is None:
        for key in ("trained_parameters", "inference_parameters", "training_tflops", "inference_tflops_per_report"):
            c[key] = Cell(None, UNAVAILABLE, why)
    else:
        c["trained_parameters"] = Cell(sum(p.trained_params for p in parts), MEASURED)
        c["inference_parameters"] = Cell(sum(p.params for p in parts), MEASURED)
        c["training_tflops"] = Cell(sum(p.train_flops for p in parts) / TERA, MEASURED,
                                    "; ".join(f"{p.name}: {p.note}" for p in parts if p.note))
        c["inference_tflops_per_report"] = Cell(sum(p.infer_flops for p in parts) / TERA, MEASURED)
    timings = gen.get("timings") or {}
    n_now = gen.get("n_generated_now") or 0
    if n_now and "generate_s" in timings:
        c["wall_s_per_report"] = Cell(timings["generate_s"] / n_now, MEASURED,
                                      f"the generate stage over {n_now} reports on {device} (images already in the "
                                      "token cache are not encoded again)")
    else:
        c["wall_s_per_report"] = Cell(None, UNAVAILABLE, "no reports generated in the run's last session")
    c["training_wall_s"] = Cell(timings["fit_s"], MEASURED, f"on {device}") if "fit_s" in timings else \
        Cell(None, UNAVAILABLE, "no fit time recorded")
    per_report, label_tokens = llm_tokens(gen)
    c["llm_tokens_per_report"] = per_report
    c["llm_label_tokens"] = label_tokens
    for key in ("training_cost_usd", "inference_cost_usd_per_report"):
        c[key] = Cell(None, UNAVAILABLE, "no price model: costs are only quoted")
    return col


def llm_tokens(gen: dict[str, Any]) -> tuple[Cell, Cell]:
    """(tokens per composed report, tokens of labelling) from the run's LLM usage record.

    Tokens of calls answered from the response cache are counted too: they are what a report
    costs, whichever run paid for them."""
    llm = gen.get("llm")
    if not llm:
        none = Cell(0, MEASURED, "the system called no LLM")
        return none, none
    stages: dict[str, Any] = {}
    for record in llm.values():
        stages.update((record or {}).get("stages") or {})

    def total(s: dict[str, Any]) -> int:
        return sum(int(s.get(k, 0) or 0) for k in ("prompt_tokens", "completion_tokens", "cached_prompt_tokens",
                                                     "cached_completion_tokens"))

    compose, label = stages.get("compose"), stages.get("label")
    per = Cell(total(compose) / compose["reports"], MEASURED, "compose stage") if compose and compose.get("reports") \
        else Cell(None, UNAVAILABLE, "no per-report LLM stage recorded")
    lab = Cell(total(label), MEASURED, "label stage") if label else Cell(None, UNAVAILABLE, "no labelling stage recorded")
    return per, lab


def quoted_columns() -> list[Column]:
    from bench.published import compute_figures

    figs = compute_figures()
    cols = []
    for name, f in figs.get("systems", {}).items():
        col = Column(f"{name} (paper)", source=f.get("source", figs.get("source", "")))
        for key, _, _ in ROWS:
            if key in f and f[key] is not None:
                col.cells[key] = Cell(float(f[key]), QUOTED)
            elif key in f:
                col.cells[key] = Cell(None, UNAVAILABLE, "NA in the source")
            else:
                col.cells[key] = Cell(None, UNAVAILABLE, "not in the source")
        cols.append(col)
    return cols


def compute_table(run_dirs: list[Path]) -> list[Column]:
    if not run_dirs:
        raise BenchError("no run directories given; pass --run DIR (repeatable) or --runs PARENT")
    return [measure_run(d) for d in run_dirs] + quoted_columns()


def find_runs(parent: Path) -> list[Path]:
    runs = sorted(p.parent for p in Path(parent).rglob("manifest.json"))
    if not runs:
        raise BenchError(f"no run directories under {parent} (looked for */manifest.json)")
    return runs


def render_md(cols: list[Column]) -> str:
    lines = ["| | " + " | ".join(c.label for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for key, header, fmt in ROWS:
        lines.append(f"| {header} | " + " | ".join(c.cells.get(key, Cell(None, UNAVAILABLE)).text(fmt)
                                                   for c in cols) + " |")
    notes = ["measured: counted or timed here from the run's models and manifest (bench/compute.py); "
             "quoted: as printed in the source, not measured here.",
             "FLOPs: torch.utils.flop_counter (a multiply-add is 2 FLOPs); LLM calls are not in the FLOPs."]
    for c in cols:
        if c.source:
            notes.append(f"{c.label}: {c.source}")
        for key, header, _ in ROWS:
            cell = c.cells.get(key)
            if cell and cell.kind == MEASURED and cell.note and key in ("training_tflops", "wall_s_per_report"):
                notes.append(f"{c.label}, {header}: {cell.note}")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def render_json(cols: list[Column]) -> str:
    out = [{"label": c.label, "source": c.source,
            "cells": {k: {"value": None if v.value is None or (isinstance(v.value, float) and math.isnan(v.value))
                          else v.value, "kind": v.kind, "note": v.note} for k, v in c.cells.items()}}
           for c in cols]
    return json.dumps({"rows": [k for k, _, _ in ROWS], "columns": out}, indent=2) + "\n"
