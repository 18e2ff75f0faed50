"""PNG pictures of reconstructed triggers: mask, pattern and mask*pattern per class, and an overview."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.images import to_uint8 as _to_uint8
from ..io.files import write_atomic

TILE = 112
CAPTION = 18


def _save(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image

    img = Image.fromarray(arr)
    return write_atomic(path, lambda p: img.save(p, format="PNG"))


def write_trigger_pngs(
    folder: str | Path,
    masks: np.ndarray,
    patterns: np.ndarray,
    value_range: tuple[float, float],
    *,
    l1: list[float] | None = None,
    flagged: list[bool] | None = None,
) -> list[Path]:
    """Write ``class<k>_mask.png``, ``class<k>_pattern.png``, ``class<k>_trigger.png`` (mask *
    pattern, on black) for every class and ``overview.png`` (one column per class, the three rows;
    flagged classes captioned in red).  Returns the paths written."""
    from PIL import Image, ImageDraw

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = value_range
    k = len(masks)
    written: list[Path] = []
    tiles = []
    for i in range(k):
        m = _to_uint8(masks[i], 0.0, 1.0)
        p = _to_uint8(patterns[i], lo, hi)
        t = _to_uint8(masks[i] * (patterns[i] - lo) + lo, lo, hi)
        for name, arr in (("mask", m), ("pattern", p), ("trigger", t)):
            written.append(_save(out / f"class{i}_{name}.png", arr))
        tiles.append((m, p, t))
    cols = min(k, 10)
    rows_of_classes = -(-k // cols)
    width = cols * TILE
    height = rows_of_classes * (3 * TILE + CAPTION)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (m, p, t) in enumerate(tiles):
        cx, cy = (i % cols) * TILE, (i // cols) * (3 * TILE + CAPTION)
        caption = f"{i}" + (f":  L1={l1[i]:.0f}" if l1 is not None else "")
        colour = "red" if flagged is not None and flagged[i] else "black"
        draw.text((cx + 4, cy + 3), caption, fill=colour)
        for r, arr in enumerate((m, p, t)):
            tile = Image.fromarray(arr).resize((TILE - 6, TILE - 6), Image.Resampling.NEAREST)
            canvas.paste(tile, (cx + 3, cy + CAPTION + r * TILE + 3))
    written.append(write_atomic(out / "overview.png", lambda q: canvas.save(q, format="PNG")))
    return written
