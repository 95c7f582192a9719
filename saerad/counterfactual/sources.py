"""The pieces a counterfactual needs, found the way the rest of the harness finds them.

- the diffusion model: `--model DIR`, or the phantom model bundled in saerad/assets/phantom-diffusion
  when the encoder is the bundled phantom encoder; refused when it was trained on another encoder;
- the SAE: `--sae DIR` (labels from the newest labels-*.json beside it), or the SAE-Rad system's own
  SAE on this dataset, trained or reused from its stage cache exactly as `bench run --system saerad`
  does (SaeRadSystem.fit), with its feature labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from saerad.counterfactual import checkpoint as ck
from saerad.counterfactual.assets import PHANTOM_DIFFUSION_DIR
from saerad.counterfactual.intervene import feature_maxima

log = logging.getLogger(__name__)


def diffusion_model(ctx: Any, model_dir: Path | None, device: str = "cpu"):
    """(model, meta, directory) of the diffusion model for this context's encoder."""
    if model_dir is None:
        if ctx.encoder_name != "phantom":
            raise BenchError(f"no diffusion model is bundled for encoder {ctx.encoder_name!r}; train one with "
                             "`bench counterfactual train --data-root ... --out DIR` and pass --model DIR")
        model_dir = PHANTOM_DIFFUSION_DIR
        if not (model_dir / ck.WEIGHTS_FILE).is_file():
            raise BenchError(f"the bundled phantom diffusion model is missing from {model_dir}; run "
                             "`python scripts/train_phantom_diffusion.py` or pass --model DIR")
    meta = ck.read_meta(model_dir)
    ck.check_encoder(meta, ctx.encoder(), str(model_dir))
    model, meta = ck.load_model(model_dir, device)
    return model, meta, Path(model_dir)


@dataclass
class SaeSource:
    sae: Any
    directory: Path
    labels: dict[int, str] = field(default_factory=dict)
    maxima: np.ndarray | None = None  # each feature's largest code on the training split

    def label(self, feature: int) -> str:
        return self.labels.get(int(feature), "")


def open_sae(ctx: Any, sae_dir: Path | None, device: str = "cpu") -> SaeSource:
    enc = ctx.encoder()
    if sae_dir is not None:
        from saerad.features.label import load_labels
        from saerad.sae import SAEError, load_sae

        try:
            sae = load_sae(sae_dir, device=device)
        except SAEError as exc:
            raise BenchError(str(exc)) from exc
        files = sorted(Path(sae_dir).glob("labels-*.json"), key=lambda p: p.stat().st_mtime)
        labels = {i: r.label for i, r in load_labels(files[-1]).items() if r.label} if files else {}
        src = SaeSource(sae, Path(sae_dir), labels)
    else:
        from saerad.system import SaeRadSystem

        system = SaeRadSystem.from_options({"device": device})
        system.fit(ctx)
        src = SaeSource(system.sae, Path(system.sae_dir),
                        {i: r.label for i, r in system.labels.items() if getattr(r, "label", "")})
    if src.sae.d_in != enc.dim:
        raise BenchError(f"the SAE in {src.directory} takes {src.sae.d_in}-d tokens but encoder {enc.name!r} gives "
                         f"{enc.dim}-d tokens; use the SAE trained on this encoder's tokens")
    src.sae.eval()
    train = ctx.dataset("train")
    src.maxima = feature_maxima(src.sae, ctx.tokens(train.samples, "train"))
    return src
