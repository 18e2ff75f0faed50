"""What every data reader shares: the format names, the ``(x, y, class_names)`` triple they return,
and the limit on decoded values checked before anything is decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
FORMATS = ("npz", "idx", "cifar10-batch", "image-folder", "images")

Raw = tuple[np.ndarray, np.ndarray | None, list[str] | None]

DEFAULT_MAX_INPUT_PIXELS = 2**28
"""``--max-input-pixels``: the most decoded values (pixels x channels) advaudit accepts for one image or
sample, and for one array it must decode into memory as a whole (268,435,456: a 9459x9459 RGB image,
or 87,000 CIFAR-10 images).  Uncompressed ``.npz`` members are memory-mapped, not decoded: only their
per-sample size counts."""


def check_values(name: str, what: str, values: int, limit: int | None) -> None:
    """Refuse ``values`` decoded values (pixels x channels) above ``limit`` (None: no limit), before
    anything is decoded: one line saying what is too large and how to raise the limit."""
    if limit is not None and values > limit:
        raise DataError(
            f"{name}: {what} would decode to {values:,} values (pixels x channels), over the limit of {limit:,}",
            f"if the input is genuine, raise the limit with --max-input-pixels {1 << max(values - 1, 1).bit_length()}",
        )


def detect_format(path: Path) -> str:
    """Guess the format from the path; CIFAR-10 pickles are never guessed."""
    if path.is_dir():
        return "image-folder" if any(p.is_dir() for p in path.iterdir()) else "images"
    suffixes = "".join(path.suffixes).lower()
    if path.suffix.lower() == ".npz":
        return "npz"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "images"
    if "idx" in path.name.lower() or suffixes.endswith((".idx", ".ubyte", ".ubyte.gz")):
        return "idx"
    raise DataError(
        f"cannot tell the format of {path.name}",
        f"name it with --data-format ({', '.join(FORMATS)})",
    )


def shape_text(shape: tuple[int, ...]) -> str:
    """A shape as ``(A, B, C)`` for messages."""
    return "(" + ", ".join(str(s) for s in shape) + ")"
