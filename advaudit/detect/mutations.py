"""Input mutation operators for Label Change Rate (Wang et al., "Detecting Adversarial Samples of Deep
Neural Networks through Mutation Testing", paper 002).

Each operator maps a batch ``x`` (N, ...) to ``k`` random mutations per input, shape (N * k, ...),
grouped by input (rows ``i*k .. i*k+k-1`` belong to input ``i``), clipped to the value range.  The
``radius`` is in units of the value range (``radius * (hi - lo)``), so one setting means the same on
[0, 1] and [0, 255] models.  All randomness comes from the given ``torch.Generator``.

* ``gaussian``: add N(0, radius^2) noise to every feature;
* ``uniform``: add noise uniform in the L-inf ball of the radius;
* ``pixel``: the reference implementation's random-pixel mutation: each feature is set to a random
  value in the range with probability ``radius`` (``radius * D`` features on average);
* ``patch``: the reference implementation's occlusion: a random rectangle (1-3 pixels a side,
  scaled with the image) is filled with random values (``c_occl``) or with the low end (``c_black``);
  radius scales its side;
* ``brightness``: the reference implementation's lighting change (``c_light``): one random offset in
  [-radius, radius] added to the whole image;
* ``darken``: the one-sided lighting change: one random offset in [-radius, 0].

Operators chain: ``darken+pixel`` darkens each mutation, then resets random pixels of it
(:func:`chain`).  ``darken+pixel`` with radii 0.5 and 0.05 is the default for one-channel images
(``auto``, see :data:`advaudit.detect.lcr.AUTO`): on MNIST, darkening
strips the bright noise that dense attacks (FGSM, C&W, the black-box attack) add to the dark
background, pixel resets undo the few saturated pixels of sparse ones (JSMA), and neither moves a
clean digit across a boundary often (brightening, by contrast, greys the background and flips clean
inputs).
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
    hit = torch.rand(tuple(xs.shape), generator=gen) < radius
    values = lo + torch.rand(tuple(xs.shape), generator=gen) * (hi - lo)
    return torch.where(hit.to(x.device), values.to(x.device), xs)


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


def _offset(xs: torch.Tensor, unit: torch.Tensor, radius: float, lo: float, hi: float) -> torch.Tensor:
    """Add ``unit[i] * radius`` of the value range to every feature of mutation ``i``."""
    shift = unit.to(xs.device) * radius * (hi - lo)
    return (xs + shift.view(-1, *([1] * (xs.dim() - 1)))).clamp(lo, hi)


def brightness(x: torch.Tensor, k: int, radius: float, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    xs = _expand(x, k)
    return _offset(xs, torch.rand(len(xs), generator=gen) * 2 - 1, radius, lo, hi)


def darken(x: torch.Tensor, k: int, radius: float, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    xs = _expand(x, k)
    return _offset(xs, -torch.rand(len(xs), generator=gen), radius, lo, hi)


def chain(
    steps: list[tuple[str, float]], x: torch.Tensor, k: int, lo: float, hi: float, gen: torch.Generator
) -> torch.Tensor:
    """``k`` mutations per input made by applying each ``(operator, radius)`` step in turn."""
    (first, r0), rest = steps[0], steps[1:]
    xs = MUTATORS[first](x, k, r0, lo, hi, gen)
    for op, r in rest:
        xs = MUTATORS[op](xs, 1, r, lo, hi, gen)
    return xs


MUTATORS: dict[str, Mutator] = {
    "gaussian": gaussian,
    "uniform": uniform,
    "pixel": pixel,
    "patch": patch,
    "brightness": brightness,
    "darken": darken,
}
