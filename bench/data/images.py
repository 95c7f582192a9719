"""Cheap completeness checks of image files, whatever their format (JPEG or PNG).

The datasets beside MIMIC-CXR-JPG ship PNGs (IU-Xray from Open-i, CheXpert Plus). What
fails in practice is an interrupted download or extraction: a file that is missing, empty
or cut short. Both formats have a fixed start and a fixed end, so reading a few bytes at
each end catches those without decoding the image.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.data.mimic import REASON_IMAGE_BAD, REASON_IMAGE_MISSING, jpeg_problem

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The IEND chunk every PNG ends with: zero length, type "IEND", its fixed CRC.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
REASON_IMAGE_BAD_PNG = "image is not a complete PNG (corrupt or truncated)"
REASON_IMAGE_UNKNOWN = "image is neither a JPEG nor a PNG"


def image_problem(path: Path) -> tuple[int, str | None]:
    """(file size, None) for a complete JPEG or PNG; (size or -1, reason) otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 64))
            tail = f.read()
    except FileNotFoundError:
        return -1, REASON_IMAGE_MISSING
    except OSError:
        return -1, REASON_IMAGE_BAD
    if head.startswith(b"\xff\xd8\xff"):
        return jpeg_problem(path)
    if head == PNG_SIGNATURE:
        return (size, None) if tail.endswith(PNG_END) else (size, REASON_IMAGE_BAD_PNG)
    return size, REASON_IMAGE_UNKNOWN
