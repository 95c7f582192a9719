"""Annotate reports with the radgraph package: the other side of bench's RadGraph protocol.

This file runs in the RadGraph environment's interpreter, not in bench's: it imports only
the standard library and `radgraph`, so any environment that has the pinned radgraph
installed can run it (see docs/metrics-rger.md).

    python worker.py REQUEST.json RESPONSE.json

REQUEST.json:  {"protocol": 1, "model_type": "radgraph-xl", "model_cache_dir": DIR,
                "device": "auto" | "cpu" | "cuda" | "cuda:N", "chunk": 64, "texts": [str, ...]}
               DIR/<model_type>/ holds the unpacked model (config.json, weights.th,
               vocabulary/), so radgraph loads it and downloads nothing.
RESPONSE.json: {"protocol": 1, "radgraph_version": "0.1.18", "device": "cuda:0",
                "annotations": [annotation | null, ...],  # one per text, radgraph's format
                "errors": {"<index>": "message", ...}}    # texts radgraph could not annotate

The response is written only on success (exit status 0), atomically. Anything radgraph
prints goes to stderr, so stdout stays free of it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys
import time

PROTOCOL = 1


def _cuda_index(device: str):
    # radgraph's RadGraph(cuda=...) takes None (auto), -1 (cpu) or a GPU index.
    if device == "auto":
        return None
    if device == "cpu":
        return -1
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def annotate(request: dict) -> dict:
    from radgraph import RadGraph

    texts = request["texts"]
    chunk = max(1, int(request.get("chunk", 64)))
    model = RadGraph(model_type=request["model_type"], model_cache_dir=request["model_cache_dir"],
                     cuda=_cuda_index(request.get("device", "auto")))
    annotations: list = [None] * len(texts)
    errors: dict[str, str] = {}
    t0 = time.perf_counter()
    for start in range(0, len(texts), chunk):
        batch = texts[start:start + chunk]
        try:
            out = model(batch)
        except Exception as exc:  # one bad chunk: retry its texts one at a time to isolate the culprit
            out = {}
            for j, text in enumerate(batch):
                try:
                    out[str(j)] = model([text])["0"]
                except Exception as inner:
                    errors[str(start + j)] = f"{type(inner).__name__}: {inner}"
            print(f"chunk at {start} failed as a whole ({exc}); annotated one by one", file=sys.stderr)
        for j in range(len(batch)):
            if str(j) in out:
                annotations[start + j] = out[str(j)]
            else:
                errors.setdefault(str(start + j), "radgraph returned no annotation for this text")
        done = min(start + chunk, len(texts))
        print(f"radgraph: {done}/{len(texts)} texts, {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return {"protocol": PROTOCOL, "radgraph_version": importlib.metadata.version("radgraph"),
            "device": str(getattr(model, "device", "")), "annotations": annotations, "errors": errors}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        request = json.load(f)
    if request.get("protocol") != PROTOCOL:
        print(f"unsupported protocol {request.get('protocol')!r}; this worker speaks {PROTOCOL}", file=sys.stderr)
        return 2
    with contextlib.redirect_stdout(sys.stderr):
        response = annotate(request)
    tmp = argv[2] + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(response, f)
    os.replace(tmp, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
