"""Gaussian smoothing (CS229 paper 004: sigma_x 0, sigma_y 0.3)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .base import Defense, need


def gaussian_kernel(sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian taps (``[1.]`` for sigma 0), radius ``round(truncate * sigma)``."""
    if sigma <= 0:
        return torch.ones(1, dtype=dtype, device=device)
    radius = max(1, int(truncate * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()



MAX_RADIUS = 1024
"""Widest kernel radius (sigma * truncate, in pixels) accepted."""

class GaussianBlur(Defense):
    """Separable Gaussian low-pass filter per channel (reflect padding).

    ``sigma`` applies to both axes; ``sigma_x`` (along the width) and ``sigma_y`` (along the height)
    override it per axis, e.g. the CS229 paper's ``gaussian:sigma_x=0,sigma_y=0.3``.  The filter is
    differentiable, so BPDA uses its exact gradient.
    """

    sigma: float
    sigma_x: float | None
    sigma_y: float | None
    truncate: float

    name: ClassVar[str] = "gaussian"
    differentiable: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"sigma": 1.0, "sigma_x": None, "sigma_y": None, "truncate": 4.0}

    def check_params(self) -> None:
        for key in ("sigma", "sigma_x", "sigma_y"):
            v = self.params[key]
            need(v is None or (math.isfinite(v) and v >= 0), self.name, f"{key} must be >= 0, got {v}")
        need(math.isfinite(self.truncate) and self.truncate > 0, self.name,
             f"truncate must be > 0, got {self.truncate}")
        widest = self.truncate * max(v for v in (self.sigma, self.sigma_x, self.sigma_y) if v is not None)
        need(widest <= MAX_RADIUS, self.name,
             f"sigma * truncate is {widest:g} pixels; a kernel radius above {MAX_RADIUS} is not a blur but a mean")

    def _sigmas(self) -> tuple[float, float]:
        sx = self.sigma if self.sigma_x is None else self.sigma_x
        sy = self.sigma if self.sigma_y is None else self.sigma_y
        return float(sx), float(sy)

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        sx, sy = self._sigmas()
        n, c, h, w = x.shape
        out = x.reshape(n * c, 1, h, w)
        kx = gaussian_kernel(sx, self.truncate, x.dtype, x.device)
        ky = gaussian_kernel(sy, self.truncate, x.dtype, x.device)
        if len(kx) > 1:
            r = len(kx) // 2
            out = F.conv2d(_pad(out, (r, r, 0, 0)), kx.view(1, 1, 1, -1))
        if len(ky) > 1:
            r = len(ky) // 2
            out = F.conv2d(_pad(out, (0, 0, r, r)), ky.view(1, 1, -1, 1))
        return out.reshape(n, c, h, w)


def _pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Reflect padding, falling back to edge replication where the image is too small to reflect."""
    h, w = x.shape[-2:]
    if pad[0] < w and pad[1] < w and pad[2] < h and pad[3] < h:
        return F.pad(x, pad, mode="reflect")
    return F.pad(x, pad, mode="replicate")
