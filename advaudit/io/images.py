"""PNG pictures: float images to uint8, and the grid of adversarial examples (torch-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .files import write_atomic

CELL = 112
CAPTION = 28


def to_uint8(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """CHW (or flat) float in [lo, hi] -> HWC uint8 for display (grey images as three equal channels)."""
    if img.ndim == 1:
        side = int(np.ceil(np.sqrt(img.size)))
        img = np.pad(img, (0, side * side - img.size)).reshape(1, side, side)
    a = np.clip((img - lo) / (hi - lo), 0, 1)
    a = (a * 255).round().astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[:, :, :3]


def save_png(path: str | Path, pixels: np.ndarray) -> Path:
    """An HWC (or HW) uint8 array as a PNG file, atomically."""
    from PIL import Image

    img = Image.fromarray(pixels)
    return write_atomic(path, lambda p: img.save(p, format="PNG"))


def example_grid(
    path: str | Path,
    x: np.ndarray,
    x_adv: np.ndarray,
    clean: Sequence[tuple[str, float]],
    adv: Sequence[tuple[str, float]],
    lo: float,
    hi: float,
    title: str,
) -> Path:
    """Write a PNG grid, one row per example: clean | perturbation (magnified) | adversarial."""
    from PIL import Image, ImageDraw

    rows = len(x)
    width, height = 3 * CELL, CAPTION + rows * (CELL + CAPTION)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 6), title, fill="black")
    for i in range(rows):
        delta = x_adv[i] - x[i]
        scale = float(np.abs(delta).max()) or 1.0
        pert = (delta / scale + 1) / 2  # [-max, max] -> [0, 1]
        cells = [
            (to_uint8(x[i], lo, hi), f"{clean[i][0]} {100 * clean[i][1]:.0f}%"),
            (to_uint8(pert, 0.0, 1.0), f"delta x{1 / scale:.1f}" if scale else "delta"),
            (to_uint8(x_adv[i], lo, hi), f"{adv[i][0]} {100 * adv[i][1]:.0f}%"),
        ]
        top = CAPTION + i * (CELL + CAPTION)
        for j, (img, caption) in enumerate(cells):
            tile = Image.fromarray(img).resize((CELL - 8, CELL - 8), Image.Resampling.NEAREST)
            canvas.paste(tile, (j * CELL + 4, top))
            draw.text((j * CELL + 4, top + CELL - 4), caption, fill="black")
    return write_atomic(path, lambda p: canvas.save(p, format="PNG"))
