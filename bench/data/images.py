"""Cheap completeness checks of image files: JPEG (MIMIC-CXR-JPG) and PNG (IU-Xray, CheXpert Plus).

What fails in practice is an interrupted download or extraction: a file that is missing,
empty or cut short. Both formats have a fixed start and a fixed end, so reading a few bytes
at each end catches those without decoding the image.

JPEG: a file starts with the SOI marker FF D8 FF and ends with the EOI marker FF D9, and
FF D9 cannot occur inside entropy-coded data (an FF there is always followed by 00 or a
restart marker), so a file cut anywhere in its image data does not end in FF D9. Trailing
zero padding after EOI is tolerated. PNG: an 8-byte signature, and the IEND chunk last.
Bit flips inside the data are not detected (that needs a full decode: measured 14 ms
against 0.05 ms for a 1024x1024 JPEG, and MIMIC's images are 2-3k pixels a side).
"""

from __future__ import annotations

import os
from pathlib import Path

# Skip reasons are fixed phrases so that summaries can count them; the path says which file.
REASON_IMAGE_MISSING = "image file missing"
REASON_IMAGE_BAD = "image is not a complete JPEG (corrupt or truncated)"
REASON_IMAGE_BAD_PNG = "image is not a complete PNG (corrupt or truncated)"
REASON_IMAGE_UNKNOWN = "image is neither a JPEG nor a PNG"

JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: zero length, its type, its fixed CRC


def _ends(path: Path) -> tuple[bytes, int, bytes] | str:
    """(first 8 bytes, size, last 64 bytes), or the reason the file cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 64))
            return head, size, f.read()
    except FileNotFoundError:
        return REASON_IMAGE_MISSING
    except OSError:
        return REASON_IMAGE_BAD


def _jpeg_complete(head: bytes, tail: bytes) -> bool:
    return head.startswith(JPEG_START) and tail.rstrip(b"\x00").endswith(JPEG_END)


def jpeg_problem(path: Path) -> tuple[int, str | None]:
    """(file size, None) for a complete JPEG; (size or -1, reason) otherwise."""
    ends = _ends(path)
    if isinstance(ends, str):
        return -1, ends
    head, size, tail = ends
    return (size, None) if _jpeg_complete(head, tail) else (size, REASON_IMAGE_BAD)


def image_problem(path: Path) -> tuple[int, str | None]:
    """(file size, None) for a complete JPEG or PNG; (size or -1, reason) otherwise."""
    ends = _ends(path)
    if isinstance(ends, str):
        return -1, ends
    head, size, tail = ends
    if head.startswith(JPEG_START):
        return (size, None) if _jpeg_complete(head, tail) else (size, REASON_IMAGE_BAD)
    if head == PNG_SIGNATURE:
        return (size, None) if tail.endswith(PNG_END) else (size, REASON_IMAGE_BAD_PNG)
    return size, REASON_IMAGE_UNKNOWN
