"""STRIP: run-time detection of inputs that carry a backdoor trigger.

Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC 2019,
https://arxiv.org/abs/1902.06531.  Superimpose the input on ``overlays`` random clean images
(saturating sum, as the authors' code) and average the Shannon entropy of the model's predictions.
A trigger dominates every blend, so a trojaned input keeps its (target) label: low entropy.  The
threshold is the ``frr`` quantile of the entropies of clean inputs (false rejection rate on clean
data), estimated when the detector is built.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError, UsageError
from ..models import Model


@dataclass
class StripResult:
    """Per-input entropies and verdicts (True = trojaned)."""

    entropy: np.ndarray
    trojaned: np.ndarray
    threshold: float
    time_s: float


class STRIPDetector:
    """STRIP (Gao et al. 2019): flags inputs whose predictions stay confident under superimposition."""

    kind = "detector"
    name = "strip"

    def __init__(
        self, model: Model, clean_x: np.ndarray, *, overlays: int = 64, frr: float = 0.01, seed: int = 0
    ) -> None:
        if len(clean_x) < 10:
            raise DataError(f"STRIP needs at least 10 clean images to overlay, got {len(clean_x)}")
        if not 0 < frr < 0.5:
            raise UsageError(f"frr must be in (0, 0.5), got {frr:g}")
        if overlays < 2:
            raise UsageError(f"overlays must be at least 2, got {overlays}")
        self.model, self.clean, self.overlays, self.seed = model, clean_x, overlays, seed
        self.threshold = float(np.quantile(self.entropy(clean_x), frr))

    def entropy(self, x: np.ndarray) -> np.ndarray:
        """Mean prediction entropy of each input blended with ``overlays`` clean images."""
        lo, hi = self.model.spec.range
        gen = torch.Generator().manual_seed(self.seed)
        pick = torch.randint(0, len(self.clean), (len(x), self.overlays), generator=gen).numpy()
        out = np.empty(len(x))
        per = max(1, 8192 // self.overlays)
        for i in range(0, len(x), per):
            xb = x[i : i + per]
            blends = np.clip(xb[:, None] + self.clean[pick[i : i + per]] - lo, lo, hi)
            p = self.model.query(blends.reshape(-1, *x.shape[1:]), batch_size=8192).probs
            ent = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
            out[i : i + per] = ent.reshape(len(xb), self.overlays).mean(axis=1)
        return out

    def __call__(self, x: np.ndarray) -> StripResult:
        start = time.perf_counter()
        ent = self.entropy(x)
        return StripResult(ent, ent < self.threshold, self.threshold, time.perf_counter() - start)
