"""Train the small token-conditioned diffusion model bundled in saerad/assets/phantom-diffusion.

It conditions on the CLS tokens of the bundled phantom encoder (bench/assets/phantom-encoder)
and is trained on the embedded default dataset's train split (90/10 train/validation by
subject; the test split is never seen), with the `phantom` preset of
saerad/counterfactual/config.py. The run directory keeps checkpoints, so a killed run resumes
where it stopped; at the end the weights, config and loss curve are copied into the package.

    python scripts/train_phantom_diffusion.py [--work runs/phantom-diffusion] [--epochs N]

docs/counterfactual.md gives the time it took and what the model does.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from saerad.counterfactual import checkpoint as ck  # noqa: E402
from saerad.counterfactual.assets import PHANTOM_DIFFUSION_DIR  # noqa: E402
from saerad.counterfactual.config import preset  # noqa: E402
from saerad.counterfactual.data import load_split_data, open_context  # noqa: E402
from saerad.counterfactual.train import DiffusionTrainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "phantom-diffusion")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    cfg = preset("phantom", **({"epochs": args.epochs} if args.epochs else {}))
    ctx = open_context(encoder="phantom", device="cpu")
    data = load_split_data(ctx, "train", cfg.image_size)
    trainer = DiffusionTrainer(cfg, data, args.work, ck.encoder_meta(ctx.encoder()))
    t0 = time.perf_counter()
    trainer.train(progress=lambda step, total, rec: step % 10 == 0 and logging.info(
        "step %d/%d loss %.4f, %.1f images/s", step, total, rec["loss"], rec["images_per_s"]))
    # A resumed run logs the step it starts from; this line says where it ended and how long it took.
    logging.info("at step %d of %d after %.0f s", trainer.step, trainer.total_steps, time.perf_counter() - t0)
    PHANTOM_DIFFUSION_DIR.mkdir(parents=True, exist_ok=True)
    for name in (ck.WEIGHTS_FILE, ck.CONFIG_FILE, ck.HISTORY_FILE, ck.LOSS_PLOT):
        shutil.copy2(args.work / name, PHANTOM_DIFFUSION_DIR / name)
    print(PHANTOM_DIFFUSION_DIR)


if __name__ == "__main__":
    main()
