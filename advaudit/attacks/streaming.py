"""Verifying attack candidates block by block, and computing per-sample figures the same way.

The attack runner (:mod:`.runner`) verifies each block of ``batch_size`` samples as soon as the attack
batches covering it are done (:class:`StreamVerifier`), so only about two batches of candidates are
ever held; a sharded run verifies the merged candidates, each rank its own blocks
(:func:`verify_blocks`).  Both give the verdicts of verifying all samples at once, batch for batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..data.views import Rows
from ..distributed import Shard
from ..models import Model
from .store import AdversarialImages, ImageSpool
from .verify import Verified, verify


@dataclass
class Keep:
    """Which verified candidates of one (attack, budget) to write to ``spool``: the successful ones
    among ``rows`` whose norm is at most ``within`` (those that can become a kept eps's example)."""

    rows: np.ndarray
    within: float
    spool: ImageSpool


def keep_for(
    kept: list[float], robust: dict[float, np.ndarray], eps: list[float], budget: float | None,
    spool: ImageSpool | None,
) -> Keep | None:
    """:class:`Keep` for an attack at ``budget`` (None: minimum-norm, every eps), or None when no
    eps it counts at keeps images."""
    at = [e for e in ([budget] if budget is not None else eps) if e in kept]
    if not at or spool is None:
        return None
    return Keep(np.logical_or.reduce([robust[e] for e in at]), max(at), spool)


class StreamVerifier:
    """Verifies candidates block by block (``[0, b)``, ``[b, 2b)``, ... with ``b = batch_size``: the
    blocks, and so the runtime's batches, of verifying all samples at once) as the attack delivers
    them, keeping per-sample verdicts and spooling the candidates ``keep`` asks for."""

    def __init__(
        self, model: Model, x: Rows, y: np.ndarray, todo: np.ndarray, targets: np.ndarray | None, norm: str,
        eps: float | None, batch_size: int, keep: Keep | None,
    ) -> None:
        self.model, self.x, self.y, self.todo, self.targets = model, x, y, todo, targets
        self.norm, self.eps, self.batch_size, self.keep = norm, eps, batch_size, keep
        self.images = AdversarialImages(x, None if keep is None else keep.spool)
        self.next = 0  # first sample of the next block to verify
        self.rows = np.zeros(0, dtype=np.int64)  # attacked, not yet verified (ascending)
        self.candidates = np.zeros((0, *x.shape[1:]), dtype=np.float32)
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, rows: np.ndarray, candidates: np.ndarray) -> None:
        self.rows = np.concatenate([self.rows, rows])
        self.candidates = np.concatenate([self.candidates, candidates.astype(np.float32, copy=False)])

    def sink(self, rows: np.ndarray, candidates: np.ndarray, bound: int) -> None:
        """Take one attack batch's candidates and verify every block now complete (an engine sink)."""
        self.add(rows, candidates)
        self.verify_until(bound)

    def verify_until(self, bound: int) -> None:
        """Verify every block that ends at or before sample ``bound`` (all todo rows below it attacked)."""
        n = len(self.x)
        while self.next < n and min(self.next + self.batch_size, n) <= bound:
            s, e = self.next, min(self.next + self.batch_size, n)
            xb = np.asarray(self.x[s:e])
            candidates = xb.copy()
            k = int(np.searchsorted(self.rows, e))
            candidates[self.rows[:k] - s] = self.candidates[:k]
            self.rows, self.candidates = self.rows[k:], self.candidates[k:]
            targets = None if self.targets is None else self.targets[s:e]
            norm = None if self.eps is None else self.norm
            v = verify(
                self.model, xb, candidates, self.y[s:e], self.todo[s:e], targets, norm, self.eps, self.batch_size
            )
            if self.keep is not None:
                measured = v.linf if self.norm == "linf" else v.l2
                wanted = np.flatnonzero(v.success & self.keep.rows[s:e] & (measured <= self.keep.within))
                self.images.put(s + wanted, v.x_adv[wanted])
            self.parts.append((v.adv_labels, v.adv_log_probs, v.success, v.linf, v.l2))
            self.next = e

    def finish(self) -> Verified:
        self.verify_until(len(self.x))
        if not self.parts:  # no samples
            empty = np.asarray(self.x[0:0])
            v = verify(self.model, empty, empty, self.y[:0], self.todo[:0], None, None, None, self.batch_size)
            self.parts.append((v.adv_labels, v.adv_log_probs, v.success, v.linf, v.l2))
        labels, log_probs, success, linf, l2 = (np.concatenate(cols) for cols in zip(*self.parts))
        return Verified(self.images, labels, log_probs, success, linf, l2)


def blocks(
    shard: Shard, n: int, size: int, compute: Callable[[int, int], tuple[np.ndarray, ...]]
) -> tuple[np.ndarray, ...]:
    """Per-sample arrays computed block by block (``[0, size)``, ``[size, 2 size)``, ...): one
    process computes them one after the other (the batches of computing all rows at once; only one
    block of inputs in memory), a rank its own blocks, merged."""
    starts = list(range(0, n, size))
    if shard.world == 1:
        if not starts:
            return compute(0, 0)
        parts = [compute(s, min(s + size, n)) for s in starts]
        return parts[0] if len(parts) == 1 else tuple(np.concatenate(cols) for cols in zip(*parts))
    parts = shard.map(lambda s: compute(s, min(s + size, n)), starts)
    if not parts:
        return compute(0, 0)
    return tuple(np.concatenate(cols) for cols in zip(*parts))


def verify_blocks(
    model: Model, x: Rows, x_adv: np.ndarray, y: np.ndarray, todo: np.ndarray, targets: np.ndarray | None,
    norm: str | None, eps: float | None, batch_size: int, shard: Shard,
) -> Verified:
    """:func:`verify` over all samples, each rank verifying its own blocks of ``batch_size``."""

    def block(s: int, e: int) -> tuple[np.ndarray, ...]:
        tb = None if targets is None else targets[s:e]
        v = verify(model, x[s:e], x_adv[s:e], y[s:e], todo[s:e], tb, norm, eps, batch_size)
        return v.x_adv, v.adv_labels, v.adv_log_probs, v.success, v.linf, v.l2

    return Verified(*blocks(shard, len(x), batch_size, block))

