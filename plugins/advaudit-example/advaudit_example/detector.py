"""Example advaudit plugin detector: ``max-softmax``, the maximum-softmax-probability baseline
(Hendrycks & Gimpel 2017) behind advaudit's :class:`~advaudit.detect.base.Detector` contract.

Registered in ``pyproject.toml`` as the ``advaudit.plugins`` entry point ``max-softmax``.  Use it
like a built-in detector::

    advaudit detect calibrate MODEL --data CLEAN --out cal.json --method max-softmax:frr=0.05
    advaudit detect MODEL --inputs INPUTS --calibration cal.json
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from advaudit.detect.base import Detector, ThresholdCalibration
from advaudit.errors import PluginError

__all__ = ["MaxSoftmax"]


@dataclass(frozen=True, kw_only=True)
class MaxSoftmax(Detector):
    """Flags inputs the model is unsure about: score = 1 - the largest class probability.

    ``calibrate`` sets the threshold at the ``1 - frr`` quantile of the clean inputs' scores, so a
    fraction ``frr`` of clean inputs is flagged; ``decide`` (the base class's) flags scores above it."""

    name: ClassVar[str] = "max-softmax"
    needs_labels: ClassVar[bool] = False

    frr: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.frr < 1:
            raise PluginError(f"detector {self.name!r}: frr must be in (0, 1), got {self.frr:g}")

    def calibrate(self, model: Any, x: Any, y: np.ndarray | None, *, seed: int = 0,
                  shard: Any = None) -> ThresholdCalibration:
        """The score threshold that flags a fraction ``frr`` of the clean inputs ``x``."""
        scores = self.score(model, None, x, seed=seed)
        return ThresholdCalibration(
            method=self.name, threshold=float(np.quantile(scores, 1 - self.frr)), frr=self.frr,
            n_inputs=len(scores), model_sha256=model.sha256, model_path=str(model.path), seed=seed,
            params=self.params(),
        )

    def score(self, model: Any, calibration: Any, x: Any, *, seed: int = 0, shard: Any = None) -> np.ndarray:
        """1 - max class probability of each input (higher = less confident = more suspicious)."""
        return 1.0 - model.query(x).probs.max(axis=1)
