"""What a model returns: :class:`Prediction` (labels and raw outputs), the output kind of raw outputs
(logits or probabilities) and their log-probabilities, and the file digest every report records."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["PROB_SUM_TOL", "Prediction", "detect_output_kind", "log_probs_of", "sha256_file"]

PROB_SUM_TOL = 1e-3


@dataclass
class Prediction:
    """Output of :meth:`Model.predict`: labels ``(N,)`` and the model's raw outputs ``(N, K)``."""

    labels: np.ndarray
    outputs: np.ndarray
    output_kind: str

    @property
    def log_probs(self) -> np.ndarray:
        t = torch.from_numpy(self.outputs)
        return log_probs_of(t, self.output_kind).numpy()

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs)


def log_probs_of(outputs: torch.Tensor, output_kind: str) -> torch.Tensor:
    """Log-probabilities of a model's raw outputs (logits or probabilities)."""
    if output_kind == "probabilities":
        return torch.log(outputs.clamp_min(1e-12))
    return torch.log_softmax(outputs, dim=-1)


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def detect_output_kind(outputs: np.ndarray) -> str:
    """``probabilities`` if every row is non-negative and sums to 1, else ``logits``."""
    if outputs.ndim == 2 and outputs.shape[1] > 1 and np.all(outputs >= 0):
        if np.allclose(outputs.sum(axis=1), 1.0, atol=PROB_SUM_TOL):
            return "probabilities"
    return "logits"
