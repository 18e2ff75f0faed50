"""Neural Cleanse's outlier test: the median absolute deviation (MAD) of the mask norms.

Wang et al. 2019, Section IV-C: with ``median`` the median of the per-label L1 norms and
``MAD = 1.4826 * median(|l1 - median|)`` (1.4826 makes the MAD a consistent estimator of the standard
deviation for normal data), a label's *anomaly index* is ``|l1 - median| / MAD``.  A label is
flagged when its norm is below the median (a backdoor makes the trigger of its target *small*) and
its anomaly index exceeds 2 (about 95% confidence under normality).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_CONSISTENCY = 1.4826
ANOMALY_THRESHOLD = 2.0


@dataclass
class MadResult:
    median: float
    mad: float
    anomaly_index: np.ndarray  # (K,) float64; inf where MAD is 0 and the norm differs from the median
    flagged: np.ndarray  # (K,) bool
    norms: np.ndarray | None = None  # (K,) the L1 norms tested

    @property
    def max_anomaly_index(self) -> float:
        """Anomaly index of the smallest norm (NC's ``min_mad``): large norms are not suspicious."""
        if not len(self.anomaly_index):
            return 0.0
        if self.norms is None:
            return float(self.anomaly_index.max())
        return float(self.anomaly_index[int(np.argmin(self.norms))])


def mad_outliers(norms: np.ndarray, threshold: float = ANOMALY_THRESHOLD) -> MadResult:
    """Anomaly index of every label and the flagged ones (below the median, index > threshold)."""
    l1 = np.asarray(norms, dtype=np.float64).reshape(-1)
    if l1.size == 0:
        raise ValueError("no norms to test")
    median = float(np.median(l1))
    dev = np.abs(l1 - median)
    mad = MAD_CONSISTENCY * float(np.median(dev))
    if mad > 0:
        index = dev / mad
    else:  # half or more of the norms are equal: any other norm is infinitely far out
        index = np.where(dev > 0, np.inf, 0.0)
    flagged = (l1 < median) & (index > threshold)
    return MadResult(median, mad, index, flagged, l1)
