"""Median filtering (feature squeezing, Xu et al. 2018)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .base import Defense, need


class MedianFilter(Defense):
    """Median over a ``window`` x ``window`` neighbourhood per channel (odd window, reflect padding).

    BPDA backward: the identity.
    """

    window: int

    name: ClassVar[str] = "median"
    defaults: ClassVar[dict[str, Any]] = {"window": 3}

    def check_params(self) -> None:
        need(self.window >= 1 and self.window % 2 == 1, self.name,
             f"window must be an odd number >= 1, got {self.window}")

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        k = int(self.window)
        if k == 1:
            return x.clone()
        r = k // 2
        h, w = x.shape[-2:]
        mode = "reflect" if r < h and r < w else "replicate"
        padded = F.pad(x, (r, r, r, r), mode=mode)
        patches = padded.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H, W, k, k)
        return patches.reshape(*x.shape, k * k).median(dim=-1).values
