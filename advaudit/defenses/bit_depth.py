"""Bit-depth reduction (feature squeezing, Xu et al. 2018)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Defense, need


class BitDepth(Defense):
    """Quantise every value to ``bits`` bits: ``round(x * (2^bits - 1)) / (2^bits - 1)``.

    The output takes at most 2^bits distinct values.  Its gradient is zero almost everywhere (the
    textbook case of obfuscated gradients); BPDA backward: the identity.
    """

    bits: int

    name: ClassVar[str] = "bit-depth"
    defaults: ClassVar[dict[str, Any]] = {"bits": 4}

    def check_params(self) -> None:
        need(1 <= self.bits <= 16, self.name, f"bits must be in 1..16, got {self.bits}")

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        levels = float(2 ** int(self.bits) - 1)
        return torch.round(x * levels) / levels
