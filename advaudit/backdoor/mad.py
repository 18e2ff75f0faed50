"""Neural Cleanse's outlier test: the median absolute deviation (MAD) of the mask norms.

Wang et al. 2019, Section IV-C: with ``median`` the median of the per-label L1 norms and
``MAD = 1.4826 * median(|l1 - median|)`` (1.4826 makes the MAD a consistent estimator of the standard
deviation for normal data), a label's *anomaly index* is ``|l1 - median| / MAD``.  A label is
flagged when its norm is below the median (a backdoor makes the trigger of its target *small*) and
its anomaly index exceeds 2 (about 95% confidence under normality).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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


GAP_ALPHA = 0.05
MIN_RATIO = 4.5
"""The gap rule's effect-size floor: a flagged label's norm is at most median / 4.5.  Set on
calibration models (``benchmarks/bench_backdoor.py --first-seed 100``), never on the benchmark: the
largest median/norm ratio of 8 clean GTSRB models (small CNN and VGG; easy sign classes such as 10 and
12 reach 2.2-3.7x) had a one-sided 99% prediction bound of 4.44 (log-normal fit, Student t), and 18
such models (seeds 100-115) give 4.29; their BadNets and blended triggers sat at 8.0-10.2x.  The former
floor, 2, flagged 3 of 6 of the first clean small CNNs.  Rechecked when 43 labels became a full search
(:data:`advaudit.backdoor.labels.SELECT_ABOVE`): the 18 clean calibration CNNs (seeds 100-117) reach
2.07-4.06x, a 99% bound of 4.29."""
NULL_SIMULATIONS = 20000


def loo_scores(logs: np.ndarray, is_reference: np.ndarray) -> np.ndarray:
    """How far each value lies *above* the reference values, in predictive standard deviations:
    ``(v_i - mean) / (sd * sqrt(1 + 1/n))`` with mean and sd of the reference values other than
    ``v_i`` (leave-one-out for references), the predictive t statistic of a new normal draw.
    ``logs`` (S, K) or (K,); ``is_reference`` (K,) bool with at least 3 references."""
    v = np.atleast_2d(logs)
    ref = v[:, is_reference]
    n, total, square = ref.shape[1], ref.sum(axis=1, keepdims=True), (ref**2).sum(axis=1, keepdims=True)
    own = np.where(is_reference, 1.0, 0.0)  # leave the value out of its own reference
    m = n - own
    mean = (total - own * v) / m
    var = np.maximum((square - own * v**2 - m * mean**2) / (m - 1), 1e-24)
    out = (v - mean) / np.sqrt(var * (1 + 1 / m))
    return out if np.ndim(logs) == 2 else out[0]


@lru_cache(maxsize=32)
def _null_max_score(references: int, labels: int, simulations: int = NULL_SIMULATIONS) -> np.ndarray:
    """Sorted null draws of the largest :func:`loo_scores` among ``labels`` i.i.d. normal values of
    which ``references`` are the reference set (the rest chosen for being extreme is what the scan
    does; the null takes the maximum over all labels, which covers it)."""
    rng = np.random.default_rng(20190519)  # fixed: the same null for the same (references, labels)
    is_ref = np.arange(labels) < references
    out = np.empty(simulations)
    for start in range(0, simulations, 2000):  # bounded memory for 1000 labels
        z = rng.standard_normal((min(2000, simulations - start), labels))
        out[start : start + len(z)] = loo_scores(z, is_ref).max(axis=1)
    return np.sort(out)


def extreme_p_values(scores: np.ndarray, references: int, labels: int) -> np.ndarray:
    """P(null maximum score >= score) for each score (see :func:`_null_max_score`)."""
    null = _null_max_score(int(references), int(labels))
    return (1 + len(null) - np.searchsorted(null, np.asarray(scores), side="left")) / (1 + len(null))


@dataclass
class GapResult:
    """Neural Cleanse's outlier test on log norms against a per-model null (:func:`gap_test`)."""

    median: float  # median L1 norm of the reference labels
    index: np.ndarray  # (K,) how far below the references each log norm lies (predictive t)
    ratio: np.ndarray  # (K,) median / norm
    p_values: np.ndarray  # (K,) P(null max index >= index)
    flagged: np.ndarray  # (K,) p < alpha and ratio >= min_ratio
    min_ratio: float = MIN_RATIO

    @property
    def p_value(self) -> float:
        """The scanner's p-value: the smallest among labels that clear the ratio floor (1 if none)."""
        ok = self.ratio >= self.min_ratio
        return float(self.p_values[ok].min()) if ok.any() else 1.0


def gap_test(
    norms: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    labels: int | None = None,
    alpha: float = GAP_ALPHA,
    min_ratio: float = MIN_RATIO,
) -> GapResult:
    """The default Neural Cleanse rule: a label is flagged when its mask norm is an outlier *and*
    a real gap, not merely a little smaller than the rest.

    * Norms are compared on a log scale (they are positive and spread multiplicatively): each label's
      index is how far its log norm lies below the mean of the other reference labels' log norms, in
      predictive standard deviations (:func:`loo_scores`).  ``reference``: a boolean mask of the
      reference labels (default: all).
    * Its p-value comes from the per-model null: the distribution of the *largest* index among
      ``labels`` (default, and at least, ``len(norms)``) i.i.d. normal log norms, simulated once per shape
      (:func:`extreme_p_values`).  This accounts for testing every label and for estimating the
      spread from the few other labels, so a clean model is flagged with probability ``alpha``
      whatever K is.
    * ``min_ratio``: the flagged label's norm must also be at most ``median / min_ratio``
      (:data:`MIN_RATIO`): the p-value alone assumes normal log norms, and real models have natural
      classes whose triggers sit 2-3.5x below the median.
    """
    l1 = np.asarray(norms, dtype=np.float64).reshape(-1)
    if l1.size == 0:
        raise ValueError("no norms to test")
    is_ref = np.ones(l1.size, bool) if reference is None else np.asarray(reference, bool).reshape(-1)
    if int(is_ref.sum()) < 3:
        raise ValueError("the gap test needs the norms of at least 3 reference labels")
    logs = np.log(np.maximum(l1, 1e-12))
    index = loo_scores(-logs, is_ref)
    # the null's labels: at least the norms given (a scan of fewer labels of interest than references)
    p = extreme_p_values(index, int(is_ref.sum()), max(int(labels or l1.size), l1.size))
    med = float(np.median(logs[is_ref]))
    ratio = np.exp(med - logs)
    flagged = (p < alpha) & (ratio >= min_ratio)
    return GapResult(float(np.exp(med)), index, ratio, p, flagged, float(min_ratio))
