"""Neural Cleanse's settings (:class:`NCConfig`), its per-label cost schedule and early stop
(:class:`CostSchedule`), and the triggers it returns (:class:`Reconstruction`): the bookkeeping of the
reference code, apart from the optimisation in :mod:`advaudit.backdoor.neural_cleanse`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

__all__ = ["CostSchedule", "NCConfig", "Reconstruction"]


@dataclass
class NCConfig:
    """Neural Cleanse's optimisation settings (defaults: the reference code's)."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    init_cost: float = 1e-3
    patience: int = 5
    early_stop_patience: int = 25
    early_stop_threshold: float = 0.99
    attack_succ_threshold: float = 0.99
    cost_multiplier: float = 2.0

    def check(self) -> NCConfig:
        """These settings, or a UsageError naming the first one out of range."""
        if self.steps < 1:
            raise UsageError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.lr <= 0 or self.init_cost <= 0 or self.cost_multiplier <= 1:
            raise UsageError("lr and init_cost must be positive and cost_multiplier above 1")
        if self.patience < 1 or self.early_stop_patience < 1:
            raise UsageError("patience and early_stop_patience must be at least 1")
        if not 0 < self.attack_succ_threshold <= 1:
            raise UsageError(f"attack_succ_threshold must be in (0, 1], got {self.attack_succ_threshold}")
        return self


@dataclass
class Reconstruction:
    """Best triggers found per target label."""

    targets: np.ndarray  # (K,)
    masks: np.ndarray  # (K, 1, H, W) in [0, 1]
    patterns: np.ndarray  # (K, C, H, W) in the value range
    l1: np.ndarray  # (K,) L1 norm of each mask
    reached: np.ndarray  # (K,) bool: a mask reached the success threshold
    steps_run: np.ndarray  # (K,) mini-batch steps each label ran
    final_cost: np.ndarray  # (K,)


class CostSchedule:
    """The reference code's per-label cost schedule and early stop, vectorised over K labels."""

    def __init__(self, k: int, cfg: NCConfig) -> None:
        self.cfg = cfg
        self.cost = np.zeros(k)
        self.set_counter = np.zeros(k, dtype=np.int64)
        self.up_counter = np.zeros(k, dtype=np.int64)
        self.down_counter = np.zeros(k, dtype=np.int64)
        self.up_flag = np.zeros(k, dtype=bool)
        self.down_flag = np.zeros(k, dtype=bool)
        self.reg_best = np.full(k, np.inf)
        self.es_counter = np.zeros(k, dtype=np.int64)
        self.es_reg_best = np.full(k, np.inf)

    def update(self, idx: np.ndarray, acc: np.ndarray, reg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step for labels ``idx`` with batch success ``acc`` and mask norms ``reg``.

        Returns ``(improved, stop)`` over ``idx``: whether this step's mask is the new best, and
        whether the label's early stop fired.
        """
        c = self.cfg
        succ = acc >= c.attack_succ_threshold
        improved = succ & (reg < self.reg_best[idx])
        self.reg_best[idx] = np.where(improved, reg, self.reg_best[idx])
        # early stop: only once a valid trigger exists
        best = self.reg_best[idx]
        es_best = self.es_reg_best[idx]
        stalled = best >= c.early_stop_threshold * es_best
        self.es_counter[idx] = np.where(
            np.isfinite(best), np.where(stalled, self.es_counter[idx] + 1, 0), self.es_counter[idx]
        )
        self.es_reg_best[idx] = np.minimum(best, es_best)
        stop = self.up_flag[idx] & self.down_flag[idx] & (self.es_counter[idx] >= c.early_stop_patience)
        # cost: set to init_cost after `patience` successes at cost 0
        at_zero = (self.cost[idx] == 0) & succ
        self.set_counter[idx] = np.where(at_zero, self.set_counter[idx] + 1, 0)
        setnow = idx[at_zero & (self.set_counter[idx] >= c.patience)]
        self.cost[setnow] = c.init_cost
        self.up_counter[setnow] = 0
        self.down_counter[setnow] = 0
        self.up_flag[setnow] = False
        self.down_flag[setnow] = False
        # then up by `cost_multiplier` after `patience` successes, down by its 1.5th power after failures
        self.up_counter[idx] = np.where(succ, self.up_counter[idx] + 1, 0)
        self.down_counter[idx] = np.where(succ, 0, self.down_counter[idx] + 1)
        up = idx[self.up_counter[idx] >= c.patience]
        self.up_counter[up] = 0
        self.cost[up] *= c.cost_multiplier
        self.up_flag[up] = True
        down = idx[(self.down_counter[idx] >= c.patience) & ~np.isin(idx, up)]
        self.down_counter[down] = 0
        self.cost[down] /= c.cost_multiplier**1.5
        self.down_flag[down] = True
        return improved, stop
