"""Truthfulness: an adversarial example counts only once the deployment runtime agrees.

:func:`finalise` (:mod:`.geometry`, re-exported here) puts a candidate exactly inside the budget and
the value range, with float32 rounding taken into account (the check is done in float64 on the
float32 values that will be saved and fed to the model), and :func:`verify` re-runs the model in its
deployment runtime (ONNX Runtime for ``.onnx``) on those exact values and judges them by
:meth:`.Criterion.counts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models import Model
from .criterion import Criterion
from .geometry import finalise, norms


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
    fooled = Criterion(targets).counts(pred.labels, y)
    linf, l2 = norms(x_fin.astype(np.float64) - x.astype(np.float64))
    moved = (linf > 0)
    return Verified(x_fin, pred.labels, pred.log_probs, fooled & clean_correct & moved, linf, l2)


__all__ = ["Verified", "finalise", "norms", "verify"]
