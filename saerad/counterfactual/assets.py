"""Where the bundled phantom diffusion model lives (trained by scripts/train_phantom_diffusion.py)."""

from pathlib import Path

PHANTOM_DIFFUSION_DIR = Path(__file__).resolve().parent.parent / "assets" / "phantom-diffusion"
