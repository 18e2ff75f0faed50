"""The threat model's geometry: the eps ball around an input, intersected with the value range.

Two projections with two different contracts, each written once:

* search time, torch, float32 (:func:`project_delta`, :func:`project`): the attacks' projection after
  every step, also used by adversarial training (:mod:`advaudit.harden.inner`).  It works in delta
  form, ``clip(x + proj(x_adv - x))``, so the attack and the training loop move through the same
  points bit for bit.
* verification time, numpy, float64 (:func:`finalise`, :func:`norms`): puts a candidate *strictly*
  inside the budget after float32 rounding, before the deployment runtime judges it
  (:mod:`advaudit.attacks.verify`, :mod:`advaudit.defenses.evaluate`).
"""

from __future__ import annotations

import numpy as np
import torch

SAFETY = 1.0 - 1e-6
"""Verification shrinks the budget by this factor so float32 rounding cannot push a candidate out."""


def project_delta(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Project perturbations (batch first) onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    factor = (eps / flat).clamp(max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


def project(
    x_adv: torch.Tensor, x: torch.Tensor, *, norm: str, eps: float | None, bounds: tuple[float, float]
) -> torch.Tensor:
    """``x_adv`` projected into the ``norm`` ball of radius ``eps`` around ``x`` (no ball when ``eps``
    is None), then clipped into the value range ``bounds``."""
    if eps is None:
        return x_adv.clamp(bounds[0], bounds[1])
    return (x + project_delta(x_adv - x, norm, eps)).clamp(bounds[0], bounds[1])


def norms(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (Linf, L2) norms, computed in float64."""
    flat = delta.reshape(len(delta), -1).astype(np.float64)
    return np.abs(flat).max(axis=1, initial=0.0), np.sqrt((flat**2).sum(axis=1))


def finalise(x: np.ndarray, x_adv: np.ndarray, lo: float, hi: float, norm: str | None, eps: float | None) -> np.ndarray:
    """Clip ``x_adv`` into [lo, hi] and, if a budget is given, strictly into its eps ball."""
    x64 = x.astype(np.float64)
    delta = x_adv.astype(np.float64) - x64
    if norm is not None and eps is not None:
        if norm == "linf":
            delta = np.clip(delta, -eps * SAFETY, eps * SAFETY)
        else:
            l2 = np.sqrt((delta.reshape(len(delta), -1) ** 2).sum(axis=1))
            scale = np.minimum(1.0, eps * SAFETY / np.maximum(l2, 1e-30))
            delta = delta * scale.reshape(-1, *([1] * (delta.ndim - 1)))
    out = np.clip(x64 + delta, lo, hi).astype(np.float32)
    if norm is not None and eps is not None:
        out = _within_budget(x, out, norm, eps)
    return out


def _within_budget(x: np.ndarray, out: np.ndarray, norm: str, eps: float, tries: int = 4) -> np.ndarray:
    """``out`` with float32 rounding overshoots taken back: each coordinate that ended up outside the
    Linf budget moves one ulp towards ``x`` (rounding moves a value by at most half an ulp); an L2
    overshoot is shrunk towards ``x`` by a hair more.  A sample still over after ``tries`` rounds (never
    seen) falls back to ``x`` itself."""
    x64 = x.astype(np.float64)
    for _ in range(tries):
        delta = out.astype(np.float64) - x64
        if norm == "linf":
            bad = np.abs(delta) > eps
            if not bad.any():
                return out
            out[bad] = np.nextafter(out[bad], x[bad])
        else:
            _, l2 = norms(delta)
            over = l2 > eps
            if not over.any():
                return out
            shrink = (1.0 - 1e-6) * eps / l2[over]
            out[over] = (x64[over] + delta[over] * shrink.reshape(-1, *([1] * (delta.ndim - 1)))).astype(np.float32)
    linf, l2 = norms(out.astype(np.float64) - x64)
    over = (linf > eps) if norm == "linf" else (l2 > eps)
    out[over] = x[over]
    return out
