"""Study images for readers: a full-resolution PNG each (the page and the workbook link) and a
small thumbnail embedded in the workbook."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bench.errors import DataError

THUMBNAIL_PX = 160


def write_png(source: Path, dest: Path) -> None:
    """The image as a PNG at full resolution (grey levels kept: no resampling, no re-quantising
    beyond the JPEG's own decode)."""
    try:
        with Image.open(source) as im:
            im.load()
            out = im.convert("L") if im.mode not in ("L", "I;16", "I") else im
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the study image {source}: {exc}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    out.save(tmp, format="PNG")
    tmp.replace(dest)


def thumbnail_png(png: Path, px: int = THUMBNAIL_PX) -> io.BytesIO:
    with Image.open(png) as im:
        im = im.convert("L")
        im.thumbnail((px, px))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    buf.seek(0)
    return buf
