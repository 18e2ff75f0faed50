"""Truthfulness: an adversarial example counts only once the deployment runtime agrees.

:func:`finalise` puts a candidate exactly inside the budget and the value range, with float32
rounding taken into account (the check is done in float64 on the float32 values that will be
saved and fed to the model), and :func:`verify` re-runs the model in its deployment runtime (ONNX
Runtime for ``.onnx``) on those exact values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models import Model

SAFETY = 1.0 - 1e-6


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


@dataclass
class Verified:
    """Deployment-runtime verdicts for a batch of candidates.

    ``x_adv`` is an array here; the attack runner's verdicts over a whole data set hold an
    :class:`~advaudit.attacks.store.AdversarialImages` instead (the candidates it keeps, on disk)."""

    x_adv: Any
    adv_labels: np.ndarray
    adv_log_probs: np.ndarray
    success: np.ndarray
    linf: np.ndarray
    l2: np.ndarray


def verify(
    model: Model,
    x: np.ndarray,
    x_adv: np.ndarray,
    y: np.ndarray,
    clean_correct: np.ndarray,
    targets: np.ndarray | None,
    norm: str | None,
    eps: float | None,
    batch_size: int = 256,
) -> Verified:
    """Finalise candidates, run the deployment runtime on them, and decide success.

    Success means: the clean input was classified correctly, the candidate is inside the range (and
    the eps ball, if given), and the runtime's label differs from ``y`` (untargeted) or equals the
    target (targeted; a sample whose target equals its label cannot succeed).
    """
    lo, hi = model.spec.range
    x_fin = finalise(x, x_adv, lo, hi, norm, eps)
    pred = model.predict(x_fin, batch_size=batch_size)
    fooled = pred.labels != y if targets is None else (pred.labels == targets) & (targets != y)
    linf, l2 = norms(x_fin.astype(np.float64) - x.astype(np.float64))
    moved = (linf > 0)
    return Verified(x_fin, pred.labels, pred.log_probs, fooled & clean_correct & moved, linf, l2)
