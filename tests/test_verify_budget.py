"""finalise(): float32 rounding must not throw an adversarial example away.

Regression: when rounding put one coordinate a hair outside a small Linf budget (2/255 on images
read from uint8), the whole sample was reset to the clean input, so verified adversarial examples were
dropped and robust accuracy overstated."""

from __future__ import annotations

import numpy as np
import pytest

from advaudit.attacks.verify import finalise, norms


@pytest.mark.parametrize("grid", [True, False])
@pytest.mark.parametrize("eps", [1 / 255, 0.004, 2 / 255, 0.00784, 8 / 255, 0.0314, 0.3])
def test_linf_corner_candidates_survive(eps: float, grid: bool) -> None:
    rng = np.random.default_rng(0)
    # Images read from uint8 (on the k/255 grid) or resized/interpolated (any float in [0, 1]).
    x = (rng.integers(0, 256, size=(64, 3, 8, 8)) / 255 if grid else rng.random((64, 3, 8, 8))).astype(np.float32)
    sign = rng.choice([-1.0, 1.0], size=x.shape)
    x_adv = x + (sign * eps).astype(np.float32)  # every coordinate at the corner, in float32 as attacks step
    out = finalise(x, x_adv, 0.0, 1.0, "linf", eps)
    linf, _ = norms(out.astype(np.float64) - x.astype(np.float64))
    assert bool((linf <= eps).all())
    inside = (x_adv >= 0) & (x_adv <= 1)
    # Every coordinate keeps its perturbation, up to the safety margin and one float32 ulp (none is
    # reset to the clean value).
    slack = eps * 1e-6 + np.spacing(np.float32(1.0))
    assert bool((np.abs(out - x_adv)[inside] <= slack).all())
    assert bool((np.abs(out.astype(np.float64) - x)[inside] > 0.99 * eps).all())


@pytest.mark.parametrize("eps", [0.05, 0.5, 2.0])
def test_l2_candidates_stay_in_budget(eps: float) -> None:
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 256, size=(32, 1, 28, 28)) / 255).astype(np.float32)
    d = rng.normal(size=x.shape)
    d *= eps / np.sqrt((d.reshape(32, -1) ** 2).sum(1)).reshape(-1, 1, 1, 1)
    x_adv = np.clip(x + d, 0, 1).astype(np.float32)
    out = finalise(x, x_adv, 0.0, 1.0, "l2", eps)
    _, l2 = norms(out.astype(np.float64) - x.astype(np.float64))
    assert bool((l2 <= eps).all())
    assert bool((l2 > 0).all())
