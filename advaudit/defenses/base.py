"""The defence contract: input purification applied before the classifier.

A defence is a plain object built from keyword hyperparameters and called on a batch::

    jpeg = JPEG(quality=75)
    x_clean = jpeg(x, bounds=(0.0, 1.0), seed=0)     # (N, C, H, W) in, same shape and range out

Subclasses write :meth:`Defense.purify` on inputs scaled to [0, 1] and declare their capabilities as
class attributes:

* ``randomized``: the output depends on a random draw (TVM's pixel dropout, k-means' initial
  centroids).  Draws come from the ``torch.Generator`` handed in (or one seeded with ``seed``), so a
  seed fixes the output.
* ``differentiable``: :meth:`purify` is itself differentiable (Gaussian smoothing, the VQ-VAE with a
  straight-through quantiser), so BPDA can use its exact gradient.

:meth:`Defense.bpda` is the Backward Pass Differentiable Approximation of Athalye et al. (2018): the
forward value is the *real* defence, the backward pass is the gradient of :meth:`approximation`
(the identity unless a defence names a differentiable approximation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, final

import torch

from ..errors import DataError, PluginError
from ..params import Parametrised


class Defense(Parametrised, ABC):
    """Base class of every input-purification defence (see the module docstring)."""

    kind: ClassVar[str] = "defense"
    name: ClassVar[str] = "?"
    randomized: ClassVar[bool] = False
    differentiable: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}
    noun: ClassVar[str] = "defence"

    def spec(self) -> str:
        """The ``NAME:key=value,...`` text that rebuilds this defence."""
        items = [f"{k}={v}" for k, v in self.params.items() if v is not None]
        return self.name + ":" + ",".join(items) if items else self.name

    def fits(self, shape: tuple[int, ...]) -> None:
        """Raise :class:`DataError` if the defence cannot handle inputs of shape (C, H, W)."""

    # ------------------------------------------------------------------ calling
    @final
    def __call__(
        self,
        x: torch.Tensor,
        *,
        bounds: tuple[float, float] = (0.0, 1.0),
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Purify ``x`` (N, C, H, W) with values in ``bounds``; same shape, dtype and range out."""
        x01, lo, hi = _to_unit(x, bounds, self.name)
        gen = generator if generator is not None else torch.Generator().manual_seed(0 if seed is None else int(seed))
        with torch.no_grad():
            out = self.purify(x01.detach(), gen)
        return (out.clamp(0.0, 1.0) * (hi - lo) + lo).to(x.dtype)

    @abstractmethod
    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The defence on inputs in [0, 1]; draw randomness only from ``generator`` (on the CPU)."""

    def approximation(self, x: torch.Tensor) -> torch.Tensor | None:
        """A differentiable approximation of :meth:`purify` on [0, 1] inputs for BPDA; None: identity."""
        if self.differentiable and not self.randomized:
            return self.purify(x, torch.Generator().manual_seed(0))
        return None

    def bpda(
        self,
        x: torch.Tensor,
        *,
        bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Straight-through: forward = the real defence, backward = the approximation's gradient."""
        real = self(x.detach(), bounds=bounds, generator=generator)
        lo, hi = bounds
        approx = self.approximation((x - lo) / (hi - lo))
        surrogate = x if approx is None else approx * (hi - lo) + lo
        return surrogate + (real - surrogate).detach()


def _to_unit(x: torch.Tensor, bounds: tuple[float, float], name: str) -> tuple[torch.Tensor, float, float]:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise DataError(f"defence {name!r} takes image batches (N, C, H, W), got {shape}")
    if not x.is_floating_point():
        raise DataError(f"defence {name!r} takes float inputs, got {x.dtype}")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not hi > lo:
        raise DataError(f"defence {name!r}: bad value range {lo:g},{hi:g}")
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0), lo, hi


def need(cond: bool, name: str, message: str) -> None:
    """Raise the one-line parameter error ``defence NAME: MESSAGE`` unless ``cond``."""
    if not cond:
        raise PluginError(f"defence {name!r}: {message}")
