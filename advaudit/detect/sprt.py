"""Wald's sequential probability ratio test, as in Algorithm 1 of paper 002, vectorised.

H1: kappa(x) >= p1 = mu * kappa_nor + sigma (adversarial) against H0: kappa(x) <= p0 = mu * kappa_nor -
sigma (normal).  After ``n`` mutations with ``c`` label changes the log ratio is

    log pr = c log(p1 / p0) + (n - c) log((1 - p1) / (1 - p0)),

and the test accepts H1 when it reaches log((1 - beta) / alpha) and H0 when it falls to
log(beta / (1 - alpha)).  Unlike the reference code, the ratio is checked after *every* mutation
(not only on label changes) and each mutation is counted once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

UNDECIDED, NORMAL, ADVERSARIAL = -1, 0, 1
ALPHA = 0.05
"""Default bound on reporting an adversarial input as normal (``--alpha``)."""
BETA = 0.05
"""Default bound on reporting a normal input as adversarial (``--beta``)."""
MU = 1.2
"""Default threshold factor: the test is kappa(x) > mu * kappa_nor (``--mu``)."""
MAX_MUTATIONS = 500
"""Default cap on the mutations the detector draws per input (``--max-mutations``)."""


@dataclass(frozen=True)
class SPRT:
    """Test parameters; :meth:`check` raises a one-line error for impossible settings."""

    kappa_nor: float
    mu: float = MU
    sigma: float = 0.05
    alpha: float = ALPHA
    beta: float = BETA

    def check(self) -> SPRT:
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if not 0.0 < v < 0.5:
                raise UsageError(f"--{name} must be in (0, 0.5), got {v:g}")
        if not (math.isfinite(self.mu) and self.mu > 0):  # NaN fails every comparison: test the good case
            raise UsageError(f"--mu must be a positive number, got {self.mu:g}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise UsageError(f"--sigma must be a positive number, got {self.sigma:g}")
        if self.sigma >= self.mu * self.kappa_nor:
            raise UsageError(
                f"--sigma {self.sigma:g} must be smaller than mu * kappa_nor = {self.mu * self.kappa_nor:.4g}",
                "lower --sigma, raise --mu, or calibrate with a larger --radius",
            )
        if self.p1 >= 1.0:
            raise UsageError(f"mu * kappa_nor + sigma = {self.p1:.4g} must be below 1", "lower --mu or --sigma")
        if not (self.p0 > 0 and (1 - self.p1) / (1 - self.p0) < 1.0):  # rates too small for float arithmetic
            raise UsageError(f"mu * kappa_nor = {self.mu * self.kappa_nor:.3g} is too small for the test to tell "
                             "normal from adversarial inputs", "raise --mu")
        return self

    @property
    def p1(self) -> float:
        return self.mu * self.kappa_nor + self.sigma

    @property
    def p0(self) -> float:
        return self.mu * self.kappa_nor - self.sigma

    @property
    def upper(self) -> float:
        return math.log((1 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        return math.log(self.beta / (1 - self.alpha))

    @property
    def min_normal(self) -> int:
        """The fewest mutations that can accept H0: all of them without a label change."""
        return max(1, math.ceil(self.lower / math.log((1 - self.p1) / (1 - self.p0)) - 1e-9))

    def log_ratio(self, c: np.ndarray, n: np.ndarray) -> np.ndarray:
        return c * math.log(self.p1 / self.p0) + (n - c) * math.log((1 - self.p1) / (1 - self.p0))


def sprt_round(
    test: SPRT, changes: np.ndarray, c0: np.ndarray, n0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feed a round of outcomes ``changes`` (A inputs x R mutations, bool) to running tests.

    Returns per input the decision (UNDECIDED, NORMAL or ADVERSARIAL) taken at the first mutation
    where the ratio crosses a threshold, and the mutation and change counts at that point (or at the
    end of the round when undecided).
    """
    a, r = changes.shape
    cum_c = c0[:, None] + np.cumsum(changes, axis=1)
    cum_n = n0[:, None] + np.arange(1, r + 1)[None, :]
    llr = test.log_ratio(cum_c, cum_n)
    up, low = llr >= test.upper, llr <= test.lower
    hit = up | low
    decided = hit.any(axis=1)
    first = np.where(decided, hit.argmax(axis=1), r - 1)
    rows = np.arange(a)
    decision = np.where(decided, np.where(up[rows, first], ADVERSARIAL, NORMAL), UNDECIDED)
    return decision, cum_n[rows, first], cum_c[rows, first]
