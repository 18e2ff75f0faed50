"""JPEG compression (Shin & Song 2017; Guo et al. 2018; CS229 paper 004: quality 90)."""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from .base import Defense, need


class JPEG(Defense):
    """JPEG compression and decompression with Pillow at a given quality (1-100).

    Images are rounded to 8 bits (JPEG's own precision), encoded and decoded one by one (Pillow
    works per image).  1 and 3 channel images are coded as greyscale and RGB; other channel counts
    channel by channel as greyscale.  BPDA backward: the identity.
    """

    quality: int

    name: ClassVar[str] = "jpeg"
    defaults: ClassVar[dict[str, Any]] = {"quality": 75}

    def check_params(self) -> None:
        need(1 <= self.quality <= 100, self.name, f"quality must be in 1..100, got {self.quality}")

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        u8 = (x.detach().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        n, c, h, w = u8.shape
        if c == 3:
            planes = np.ascontiguousarray(u8.transpose(0, 2, 3, 1))  # (N, H, W, 3)
            out = np.stack([self._code(planes[i], "RGB") for i in range(n)]).transpose(0, 3, 1, 2)
        else:
            planes = u8.reshape(n * c, h, w)
            out = np.stack([self._code(planes[i], "L") for i in range(n * c)]).reshape(n, c, h, w)
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device, x.dtype) / 255.0

    def _code(self, img: np.ndarray, mode: str) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(img, mode=mode).save(buf, format="JPEG", quality=int(self.quality))
        buf.seek(0)
        with Image.open(buf) as decoded:
            return np.asarray(decoded.convert(mode))
