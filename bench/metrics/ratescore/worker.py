"""Score report pairs with the RaTEScore package: the other side of bench's RaTEScore protocol.

This file runs in the RaTEScore environment's interpreter, not in bench's: it imports only the
standard library and the `RaTEScore` package (which brings medspacy, torch and transformers),
so any environment with the package installed can run it (docs/metrics-text-similarity.md).

    python worker.py REQUEST.json RESPONSE.json

REQUEST.json:  {"protocol": 1, "ner_model": DIR, "eval_model": DIR, "device": "cpu" | "cuda",
                "batch_size": 1, "affinity_matrix": "long" | "short" | PATH,
                "pairs": [[reference, prediction], ...]}
RESPONSE.json: {"protocol": 1, "ratescore_version": "0.6.0", "scores": [float, ...]}

Models are local directories, so nothing is downloaded. The response is written only on
success (exit status 0), atomically. Anything the package prints goes to stderr.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys

PROTOCOL = 1


def score(request: dict) -> dict:
    from RaTEScore import RaTEScore

    scorer = RaTEScore(bert_model=request["ner_model"], eval_model=request["eval_model"],
                       batch_size=int(request.get("batch_size", 1)), use_gpu=request.get("device", "cpu") != "cpu",
                       affinity_matrix=request.get("affinity_matrix", "long"))
    pairs = request["pairs"]
    refs = [p[0] for p in pairs]
    preds = [p[1] for p in pairs]
    scores = scorer.compute_score(preds, refs) if pairs else []  # the package takes candidates first
    return {"protocol": PROTOCOL, "ratescore_version": importlib.metadata.version("RaTEScore"),
            "scores": [float(s) for s in scores]}


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
        response = score(request)
    tmp = argv[2] + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(response, f)
    os.replace(tmp, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
