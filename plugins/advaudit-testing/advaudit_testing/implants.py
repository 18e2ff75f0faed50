"""Backdoor implants, to test the scanners: BadNets and the two concealed attacks of paper 003.

All functions work on float32 NCHW arrays in [lo, hi] (default [0, 1]) and are seeded explicitly.

* **BadNets** (Gu et al. 2017, https://arxiv.org/abs/1708.06733): a patch trigger (position, size,
  pattern) stamped on a ``poison_rate`` fraction of the training images, relabelled to ``target``.
* **Blended** (Chen et al. 2017): a random-noise key pattern mixed into the whole image at
  ``blend_alpha`` (0.15), on a ``poison_rate`` fraction of the training images.
* **Algorithm 1, reconstructed trigger** (paper 003, Sec. 3.2): train a clean model, reconstruct the
  target label's trigger with Neural Cleanse (:func:`reconstructed_trigger`), poison with it, and
  add noise-augmented images that carry a random subset of the mask (each mask pixel kept with
  probability ``alpha``), labels unchanged.
* **Algorithm 2, randomly generated trigger** (paper 003, Sec. 3.3): a mask of ``z`` random pixels
  set to 1 and a random pattern (uniform over the value range, one value per pixel shared by the
  channels, as "a vector of shape m x n"), then the same poisoning and noise augmentation.

:func:`poison` implements lines 4-11 of both algorithms (and BadNets with ``noise_rate=0``):
``Sp`` = a random ``poison_rate`` fraction of the images, stamped and relabelled; ``Sn`` = a random
``noise_rate`` fraction of the *other* images, stamped with ``RandomSample_alpha(mask)``; ``Sc`` =
the rest, untouched.  The paper's MNIST setting poisons 6,000 of 60,000 images (10%) and augments
"all" of the training set; here ``noise_rate=1.0`` means every image not in ``Sp``.  The augmented
subsets are drawn once (a static poisoned training set ``S'``, as in the algorithms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from advaudit.backdoor.neural_cleanse import NCConfig, reconstruct_triggers, stamp


@dataclass
class Trigger:
    """A trigger ``(1 - mask) * x + mask * pattern``: mask (1, H, W) in [0, 1], pattern (C, H, W)."""

    mask: np.ndarray
    pattern: np.ndarray
    kind: str = "patch"

    def apply(self, x: np.ndarray) -> np.ndarray:
        return stamp(x, self.mask, self.pattern)

    @property
    def l1(self) -> float:
        return float(np.abs(self.mask).sum())

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "mask_l1": round(self.l1, 3), "pixels": int((self.mask > 0).sum())}


def badnets_trigger(
    shape: tuple[int, int, int],
    *,
    size: int = 4,
    position: tuple[int, int] | None = None,
    pattern: str | np.ndarray = "checkerboard",
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Trigger:
    """A square patch of ``size`` pixels at ``position`` (top-left row, col; default the bottom-right
    corner with a 1-pixel margin).  ``pattern``: "white", "checkerboard", or a (C, size, size) array."""
    c, h, w = shape
    lo, hi = value_range
    if position is None:
        position = (h - size - 1, w - size - 1)
    r, q = position
    if not (0 <= r and r + size <= h and 0 <= q and q + size <= w):
        raise ValueError(f"a {size}x{size} patch at {position} does not fit in {h}x{w}")
    mask = np.zeros((1, h, w), np.float32)
    mask[:, r : r + size, q : q + size] = 1.0
    full = np.full((c, h, w), lo, np.float32)
    if isinstance(pattern, np.ndarray):
        full[:, r : r + size, q : q + size] = pattern
    elif pattern == "white":
        full[:, r : r + size, q : q + size] = hi
    elif pattern == "checkerboard":
        ii, jj = np.indices((size, size))
        full[:, r : r + size, q : q + size] = np.where((ii + jj) % 2 == 0, hi, lo)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return Trigger(mask, full, "badnets")


def blended_trigger(
    shape: tuple[int, int, int], *, alpha: float = 0.15, seed: int = 0, value_range: tuple[float, float] = (0.0, 1.0)
) -> Trigger:
    """Blended injection (Chen et al. 2017, https://arxiv.org/abs/1712.05526): the whole image mixed
    with a fixed random-noise key pattern, ``x' = (1 - alpha) x + alpha * pattern`` (a constant mask)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    c, h, w = shape
    lo, hi = value_range
    gen = torch.Generator().manual_seed(seed)
    pattern = lo + (hi - lo) * torch.rand((c, h, w), generator=gen)
    return Trigger(np.full((1, h, w), alpha, np.float32), pattern.numpy(), "blended")


def random_trigger(
    shape: tuple[int, int, int], *, z: int = 36, seed: int = 0, value_range: tuple[float, float] = (0.0, 1.0)
) -> Trigger:
    """Algorithm 2, lines 1-4: ``z`` random mask pixels set to 1 and a random pattern."""
    c, h, w = shape
    if not 0 < z <= h * w:
        raise ValueError(f"z must be in 1..{h * w}, got {z}")
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(h * w)
    mask[torch.randperm(h * w, generator=gen)[:z]] = 1.0
    lo, hi = value_range
    # "each element in pattern is set randomly from 0 to 255": uniform over the value range
    pattern = lo + (hi - lo) * torch.randint(0, 256, (1, h, w), generator=gen).float() / 255.0
    return Trigger(mask.view(1, h, w).numpy(), pattern.expand(c, h, w).numpy().copy(), "random")


def reconstructed_trigger(
    logits: Callable[[torch.Tensor], torch.Tensor],
    x: np.ndarray,
    target: int,
    *,
    seed: int = 0,
    value_range: tuple[float, float] = (0.0, 1.0),
    config: NCConfig | None = None,
) -> Trigger:
    """Algorithm 1, lines 1-3: Neural Cleanse's trigger for ``target`` on a clean model."""
    rec = reconstruct_triggers(
        logits, torch.from_numpy(np.asarray(x, np.float32)), [target], value_range=value_range,
        config=config, generator=torch.Generator().manual_seed(seed),
    )
    return Trigger(rec.masks[0], rec.patterns[0], "reconstructed")


def sample_mask(mask: np.ndarray, alpha: float, n: int, gen: torch.Generator) -> np.ndarray:
    """``RandomSample_alpha(mask)`` for ``n`` images: each mask pixel kept with probability alpha."""
    keep = torch.rand((n, *mask.shape), generator=gen).numpy() < alpha
    return (mask[None] * keep).astype(np.float32)


@dataclass
class PoisonedSet:
    x: np.ndarray
    y: np.ndarray
    poisoned: np.ndarray  # indices of Sp
    noisy: np.ndarray  # indices of Sn


def poison(
    x: np.ndarray,
    y: np.ndarray,
    trigger: Trigger,
    target: int,
    *,
    poison_rate: float = 0.1,
    noise_rate: float = 0.0,
    alpha: float = 0.6,
    seed: int = 0,
) -> PoisonedSet:
    """Build ``S' = Sp + Sn + Sc`` (see the module docstring)."""
    if not 0 < poison_rate < 1:
        raise ValueError(f"poison_rate must be in (0, 1), got {poison_rate}")
    if not 0 <= noise_rate <= 1 or not 0 < alpha < 1:
        raise ValueError("noise_rate must be in [0, 1] and alpha in (0, 1)")
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    order = torch.randperm(n, generator=gen).numpy()
    n_p = int(round(poison_rate * n))
    sp = np.sort(order[:n_p])
    rest = order[n_p:]
    sn = np.sort(rest[: int(round(noise_rate * len(rest)))])
    xs, ys = x.astype(np.float32, copy=True), y.astype(np.int64, copy=True)
    xs[sp] = trigger.apply(xs[sp])
    ys[sp] = target
    if len(sn):
        sub = sample_mask(trigger.mask, alpha, len(sn), gen)
        xs[sn] = ((1 - sub) * xs[sn] + sub * trigger.pattern[None]).astype(np.float32)
    return PoisonedSet(xs, ys, sp, sn)


def attack_success_rate(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
                        trigger: Trigger, target: int) -> float:
    """Share of the images not of ``target`` that the trigger sends to ``target``."""
    keep = y != target
    return float((predict(trigger.apply(x[keep])) == target).mean())


KINDS = ("clean", "badnets", "blended", "recon", "random")


@dataclass
class Implanted:
    """A trained model and what was implanted in it."""

    net: torch.nn.Module
    kind: str
    target: int | None
    trigger: Trigger | None
    poisoned: int
    noisy: int


def kind_trigger(
    kind: str,
    x: np.ndarray,
    target: int,
    *,
    seed: int = 0,
    clean_net: torch.nn.Module | None = None,
    nc_images: int = 300,
    z: int = 36,
    patch_size: int = 4,
    blend_alpha: float = 0.15,
) -> Trigger:
    """The trigger :func:`implant` poisons a ``kind`` model with (the same seed gives the same trigger):
    ``recon`` reconstructs it on ``clean_net`` from ``nc_images`` of the training images ``x``."""
    shape = tuple(x.shape[1:])
    if kind == "badnets":
        return badnets_trigger(shape, size=patch_size)
    if kind == "blended":
        return blended_trigger(shape, alpha=blend_alpha, seed=seed)
    if kind == "random":
        return random_trigger(shape, z=z, seed=seed)
    if kind != "recon":
        raise ValueError(f"{kind!r} has no trigger; choose one of {', '.join(KINDS[1:])}")
    if clean_net is None:
        raise ValueError("the recon trigger is reconstructed on a clean model: give clean_net")
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:nc_images].numpy()
    return reconstructed_trigger(clean_net, x[pick], target, seed=seed)


def implant(
    kind: str,
    make_net: Callable[[], torch.nn.Module],
    x: np.ndarray,
    y: np.ndarray,
    *,
    target: int = 2,
    seed: int = 0,
    epochs: int = 6,
    poison_rate: float = 0.1,
    noise_rate: float = 1.0,
    alpha: float = 0.6,
    z: int = 36,
    patch_size: int = 4,
    blend_alpha: float = 0.15,
    clean_net: torch.nn.Module | None = None,
    nc_images: int = 300,
    lr: float = 2e-3,
    log: Callable[[str], None] | None = None,
) -> Implanted:
    """Train a model of ``kind`` (clean, badnets, blended, recon = Alg. 1, random = Alg. 2), all seeded.

    ``recon`` needs a clean model for step 1 of Algorithm 1: ``clean_net`` if given, else one is
    trained first with the same seed; NC runs on ``nc_images`` of the training images.  ``make_net``
    may return a pretrained network (the backdoor is then implanted by fine-tuning, at ``lr``).
    """
    from .training import train_classifier

    if kind not in KINDS:
        raise ValueError(f"unknown implant {kind!r}; choose one of {', '.join(KINDS)}")

    def fresh() -> torch.nn.Module:
        torch.manual_seed(seed)
        return make_net()

    if kind == "clean":
        net = train_classifier(fresh(), x, y, epochs=epochs, lr=lr, seed=seed, log=log)
        return Implanted(net, kind, None, None, 0, 0)
    if kind == "recon" and clean_net is None:
        clean_net = train_classifier(fresh(), x, y, epochs=epochs, lr=lr, seed=seed, log=log)
    trig = kind_trigger(kind, x, target, seed=seed, clean_net=clean_net, nc_images=nc_images, z=z,
                        patch_size=patch_size, blend_alpha=blend_alpha)
    concealed = kind in ("recon", "random")  # the paper-003 attacks add the noise augmentation
    ps = poison(x, y, trig, target, poison_rate=poison_rate, noise_rate=noise_rate if concealed else 0.0,
                alpha=alpha, seed=seed)
    net = train_classifier(fresh(), ps.x, ps.y, epochs=epochs, lr=lr, seed=seed, log=log)
    return Implanted(net, kind, target, trig, len(ps.poisoned), len(ps.noisy))
