"""Input mutation operators for Label Change Rate (Wang et al., "Detecting Adversarial Samples of Deep
Neural Networks through Mutation Testing", paper 002).

Each operator maps a batch ``x`` (N, ...) to ``k`` random mutations per input, shape (N * k, ...),
grouped by input (rows ``i*k .. i*k+k-1`` belong to input ``i``), clipped to the value range.  The
``radius`` is in units of the value range (``radius * (hi - lo)``), so one setting means the same on
[0, 1] and [0, 255] models.  All randomness comes from the given ``torch.Generator``.

* ``gaussian``: add N(0, radius^2) noise to every feature;
* ``uniform``: add noise uniform in the L-inf ball of the radius;
* ``pixel``: the reference implementation's random-pixel mutation: ``max(1, radius * D)`` random
  features are set to random values in the range;
* ``patch``: the reference implementation's occlusion: a random rectangle (1-3 pixels a side,
  scaled with the image) is filled with random values (``c_occl``) or with the low end (``c_black``);
  radius scales its side;
* ``brightness``: the reference implementation's lighting change (``c_light``): one random offset in
  [-radius, radius] added to the whole image.
"""

from __future__ import annotations

from typing import Callable

import torch

Mutator = Callable[[torch.Tensor, int, float, float, float, torch.Generator], torch.Tensor]


def _expand(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.repeat_interleave(k, dim=0)


def _rand(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=gen).to(device)


def gaussian(x: torch.Tensor, k: int, radius: float, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    xs = _expand(x, k)
    noise = torch.randn(tuple(xs.shape), generator=gen).to(x.device)
    return (xs + noise * radius * (hi - lo)).clamp(lo, hi)


def uniform(x: torch.Tensor, k: int, radius: float, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    xs = _expand(x, k)
    noise = _rand(tuple(xs.shape), gen, x.device) * 2 - 1
    return (xs + noise * radius * (hi - lo)).clamp(lo, hi)


def pixel(x: torch.Tensor, k: int, radius: float, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    xs = _expand(x, k)
    flat = xs.reshape(len(xs), -1)
    d = flat.shape[1]
    m = max(1, min(d, int(round(radius * d))))
    idx = torch.rand((len(xs), d), generator=gen).argsort(dim=1)[:, :m].to(x.device)
    values = lo + _rand((len(xs), m), gen, x.device) * (hi - lo)
    return flat.scatter(1, idx, values).reshape(xs.shape)


def patch(x: torch.Tensor, k: int, radius: float, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    xs = _expand(x, k)
    if xs.dim() != 4:
        return pixel(x, k, radius, lo, hi, gen)
    n, _, h, w = xs.shape
    scale = max(1.0, radius * min(h, w) / 3.0)
    ph = (torch.randint(1, 4, (n,), generator=gen).float() * scale).clamp(max=h).long()
    pw = (torch.randint(1, 4, (n,), generator=gen).float() * scale).clamp(max=w).long()
    top = (torch.rand(n, generator=gen) * (h - ph + 1).float()).long()
    left = (torch.rand(n, generator=gen) * (w - pw + 1).float()).long()
    rows = torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :]
    mask = ((rows >= top[:, None]) & (rows < (top + ph)[:, None]))[:, :, None] & (
        (cols >= left[:, None]) & (cols < (left + pw)[:, None])
    )[:, None, :]
    black = torch.rand(n, generator=gen) < 0.5
    fill = lo + torch.rand(tuple(xs.shape), generator=gen) * (hi - lo)
    fill = torch.where(black[:, None, None, None], torch.full_like(fill, lo), fill).to(x.device)
    return torch.where(mask[:, None].to(x.device), fill, xs)


def brightness(x: torch.Tensor, k: int, radius: float, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    xs = _expand(x, k)
    shift = (torch.rand(len(xs), generator=gen) * 2 - 1).to(x.device) * radius * (hi - lo)
    return (xs + shift.view(-1, *([1] * (xs.dim() - 1)))).clamp(lo, hi)


MUTATORS: dict[str, Mutator] = {
    "gaussian": gaussian,
    "uniform": uniform,
    "pixel": pixel,
    "patch": patch,
    "brightness": brightness,
}
