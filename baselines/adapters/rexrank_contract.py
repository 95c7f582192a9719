"""The ReXrank contract from the model's side: `SCRIPT [options] <input_json> <output_json> <img_root>`.

Shared by the adapter scripts, which run in their own environments (no harness there), so
this module needs the standard library only. It gives every adapter the same behaviour:
- every input record is checked before the model is loaded (bad input: one line naming the
  ids, exit 2, nothing generated);
- ids already in the output file are not generated again (resume after a crash or a stop);
- samples are generated in batches, and the output file is rewritten atomically after every
  batch, so a crash loses at most one batch and the harness can watch progress;
- progress goes to stderr, one line per batch;
- a missing requirement (weights, licence, GPU) is one line, `error: <adapter>: ...`, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

EXIT_USAGE = 2


class AdapterError(Exception):
    """Bad input or a missing requirement: reported as one line, exit code 2."""


@dataclass(frozen=True)
class ModelCard:
    """What an adapter says about its model: names, where weights come from, the licence
    step a user must take, and the model card's generation length."""

    name: str  # the system's name (also in option names: --opt NAME.model=...)
    title: str
    hub_id: str
    weights_env: str  # the environment variable naming a local weights directory
    licence_step: str
    max_new_tokens: int


def argument_parser(card: ModelCard) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=f"{card.title} findings through the ReXrank contract")
    p.add_argument("input_json")
    p.add_argument("output_json")
    p.add_argument("img_root")
    p.add_argument("--model", default=os.environ.get(card.weights_env) or card.hub_id,
                   help=f"local weights directory or hub id (default: ${card.weights_env}, else {card.hub_id})")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--max-new-tokens", type=int, default=card.max_new_tokens)
    return p


def weights_for(card: ModelCard, args: argparse.Namespace) -> str:
    """The weights directory to load, after checking the device: each missing piece is one line."""
    check_device(card.name, args.device)
    path = resolve_weights(card, args.model)
    say(card.name, f"loading {args.model} from {path} on {args.device} ({args.dtype})")
    return path


def read_input(path: str | Path) -> dict[str, dict[str, Any]]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"input file {p} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"input file {p} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise AdapterError(f"input file {p} must hold a JSON object of records keyed by sample id")
    return data


def read_output(path: str | Path) -> dict[str, str]:
    """What an earlier attempt wrote (resume); {} when there is nothing yet."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"output file {p} exists but is not valid JSON ({exc}); move it away to start over") from None
    if not isinstance(data, dict):
        raise AdapterError(f"output file {p} exists but does not hold a JSON object; move it away to start over")
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


def write_output(path: str | Path, results: dict[str, str]) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, p)  # a reader never sees half a file


def image_file(img_root: str | Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else Path(img_root) / p


def batches(items: Sequence, size: int) -> list[Sequence]:
    if size < 1:
        raise AdapterError(f"--batch-size {size}: must be at least 1")
    return [items[i:i + size] for i in range(0, len(items), size)]


def run(name: str, args: argparse.Namespace, prepare: Callable[[str, dict], Any],
        load: Callable[[], Any], generate: Callable[[Any, list[Any]], list[str]]) -> int:
    """The adapter's whole run: check, resume, load, generate in batches, write as it goes.

    `prepare(id, record)` turns a record into the model's input (pure; AdapterError on bad
    input), `load()` loads the model (AdapterError when weights or a device are missing), and
    `generate(model, prepared)` returns one findings text per prepared input."""
    records = read_input(args.input_json)
    results = read_output(args.output_json)
    todo = [i for i in records if i not in results]
    say(name, f"{len(records)} samples, {len(records) - len(todo)} already in {args.output_json}, {len(todo)} to generate")
    prepared, problems = {}, []
    for i in todo:
        try:
            prepared[i] = prepare(i, records[i])
        except AdapterError as exc:
            problems.append(f"{i}: {exc}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise AdapterError(f"{len(problems)} input records cannot be used: " + "; ".join(problems[:3]) + more)
    if not todo:
        return 0
    model = load()
    t0, done = time.monotonic(), 0
    for batch in batches(todo, args.batch_size):
        texts = generate(model, [prepared[i] for i in batch])
        if len(texts) != len(batch):
            raise RuntimeError(f"generated {len(texts)} texts for a batch of {len(batch)}")
        results.update(zip(batch, texts))
        write_output(args.output_json, results)
        done += len(batch)
        rate = (time.monotonic() - t0) / done
        say(name, f"{done}/{len(todo)} generated ({rate:.2f} s per report)")
    return 0


def main(name: str, body: Callable[[], int]) -> None:
    """Run `body`, turning AdapterError into one line on stderr and exit code 2."""
    try:
        sys.exit(body())
    except AdapterError as exc:
        print(f"error: {name}: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)


def say(name: str, text: str) -> None:
    print(f"{name}: {text}", file=sys.stderr, flush=True)


def resolve_weights(card: ModelCard, model: str) -> str:
    """A local directory with the model's weights: `model` itself when it is one, else the
    Hugging Face cache (downloading when the hub is reachable and allowed). Missing weights
    are one AdapterError naming the model, the licence step and how to provide them."""
    remedy = (f"{card.licence_step}; then `hf auth login` (or HF_TOKEN) lets them download into the Hugging Face "
              f"cache, or download them yourself and set {card.weights_env}=/path/to/weights "
              f"(or --opt {card.name}.model=/path/to/weights)")
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise AdapterError(f"{local} has no config.json: not a {card.title} checkpoint ({remedy})")
        return str(local)
    if model.startswith(("/", ".", "~")):
        raise AdapterError(f"weights directory {model} does not exist ({remedy})")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise AdapterError("huggingface_hub is not installed in this environment; rebuild it with "
                           f"`bench env create {card.name} --replace`") from None
    try:
        return snapshot_download(model, local_files_only=True)
    except Exception:  # not in the cache: download, unless offline
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline:
        raise AdapterError(f"weights of {model} are not in the Hugging Face cache and HF_HUB_OFFLINE is set ({remedy})")
    try:
        return snapshot_download(model)
    except Exception as exc:
        raise AdapterError(f"weights of {model} are not available: {_hub_reason(exc)} ({remedy})") from None


def _hub_reason(exc: Exception) -> str:
    """Why the hub gave no weights, in a few words (huggingface_hub's messages run to paragraphs)."""
    kind = type(exc).__name__
    if kind == "GatedRepoError":
        return "the model is gated and this account has not been granted access"
    if kind == "RepositoryNotFoundError":
        return "the hub has no such model, or this account cannot see it"
    if kind in ("LocalEntryNotFoundError", "ConnectionError", "OfflineModeIsEnabled") or "connect" in str(exc).lower():
        return "the hub cannot be reached and they are not in the Hugging Face cache"
    first = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else ""
    return f"{kind}: {first[:160]}" if first else kind


def check_device(name: str, device: str) -> str:
    """`device` if torch can use it; a one-line AdapterError saying what to do otherwise."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AdapterError(f"no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False); "
                           f"run on a machine with a GPU, or pass --opt {name}.device=cpu "
                           "(correct but very slow: minutes per report)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AdapterError(f"device mps is not available here; pass --opt {name}.device=cpu")
    return device
