"""Auto-PGD: step-size-free PGD with momentum (APGD-CE, and AutoAttack's targeted APGD-DLR).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690 (Algorithm 1, section 3).

Threat model: white-box, fixed budget, Linf or L2 ball of radius eps intersected with the value range.
APGD starts with step size 2 eps from a random point of the ball and takes gradient steps (sign for
Linf, L2-normalised gradient for L2) with momentum alpha = 0.75.  At the checkpoints
``w_j = ceil(p_j * steps)`` (``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``)
a sample's step size is halved and its iterate reset to its best point so far when

1. fewer than ``rho`` of the steps since the last checkpoint increased the loss, or
2. its step size was not halved at the last checkpoint and its best loss has not improved since.

The conditions are checked once iterate ``w_j`` has been evaluated, over the ``w_j - w_{j-1}`` steps
since the last checkpoint; as in the paper (not the reference code), condition 2 applies from the first
checkpoint on, against the loss of the starting point.

Everything is per sample, batched.  A sample is frozen and dropped from the batch at its first
adversarial iterate; samples never fooled return their highest-loss point (the paper's ``x_max``).

* ``apgd-ce``: untargeted cross-entropy (targeted mode: minus the cross-entropy of the target).
* ``apgd-dlr``: AutoAttack's "apgd-t": the targeted DLR loss (eq. 6) towards each of the
  ``n_target_classes`` most likely wrong classes of the clean input in turn, each target run only on
  the samples still robust.  In targeted mode it goes towards the requested target only, and since
  success then means the target beats *every* class, eq. 6 is applied with the best non-target class
  in place of the true label (the paper defines no targeted-success mode for DLR).

Example::

    out = APGDCE()(model, x, y, eps=0.3, norm="linf", seed=0)
    out = APGDDLR(n_target_classes=3)(model, x, y, eps=8 / 255, norm="linf")
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from ..errors import PluginError, UsageError
from .base import Attack, AttackContext
from .fgsm import gradient_step
from .losses import dlr_targeted
from .pgd import LossFn, ce_loss, check_positive_int, loss_and_grad, random_start, subset

MOMENTUM = 0.75
"""alpha in Algorithm 1: weight of the new gradient step against the previous update."""
INITIAL_STEP = 2.0
"""eta^(0) = 2 eps."""
FIRST_CHECKPOINT = 0.22
MIN_CHECKPOINT_GAP = 0.06
CHECKPOINT_GAP_DECAY = 0.03


def checkpoint_fractions(limit: float = 1.0) -> list[float]:
    """The paper's p_j up to ``limit``: 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99."""
    p = [0.0, FIRST_CHECKPOINT]
    while True:
        nxt = round(p[-1] + max(p[-1] - p[-2] - CHECKPOINT_GAP_DECAY, MIN_CHECKPOINT_GAP), 10)
        if nxt > limit:
            return p
        p.append(nxt)


def checkpoints(steps: int) -> list[int]:
    """The checkpoint iterations ``w_j = ceil(p_j * steps)``, without repeats (w_0 = 0 first)."""
    return sorted({math.ceil(round(p * steps, 6)) for p in checkpoint_fractions()})


@dataclass
class _State:
    """Per-sample APGD state for the samples still being attacked (row i is sample ``index[i]``)."""

    index: torch.Tensor
    x: torch.Tensor  # x^(k)
    x_prev: torch.Tensor  # x^(k-1)
    grad: torch.Tensor  # gradient at x^(k)
    loss: torch.Tensor  # f(x^(k))
    x_best: torch.Tensor  # x_max
    grad_best: torch.Tensor
    loss_best: torch.Tensor  # f_max
    step: torch.Tensor  # eta^(k), per sample
    increases: torch.Tensor  # steps since the last checkpoint that increased the loss
    loss_best_at_check: torch.Tensor  # f_max at the last checkpoint
    halved_at_check: torch.Tensor  # whether eta was halved at the last checkpoint

    def select(self, keep: torch.Tensor) -> _State:
        return replace(self, **{f.name: getattr(self, f.name)[keep] for f in fields(self)})


def _momentum_step(ctx: AttackContext, s: _State, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """x^(k+1) = P(x^(k) + alpha (z - x^(k)) + (1 - alpha)(x^(k) - x^(k-1))), z = P(x^(k) + eta grad step)."""
    shape = (-1, *([1] * (x.dim() - 1)))
    z = ctx.project(s.x + s.step.view(shape) * gradient_step(s.grad, ctx.norm), x)
    return ctx.project(s.x + alpha * (z - s.x) + (1 - alpha) * (s.x - s.x_prev), x)


def _advance(s: _State, x_new: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor) -> None:
    """Move to the new iterate: count a loss increase, keep the best point (in place)."""
    s.x_prev, s.x, s.grad = s.x, x_new, grad
    s.increases = s.increases + (loss > s.loss).float()
    s.loss = loss
    better = loss > s.loss_best
    mask = better.view(-1, *([1] * (x_new.dim() - 1)))
    s.x_best = torch.where(mask, x_new, s.x_best)
    s.grad_best = torch.where(mask, grad, s.grad_best)
    s.loss_best = torch.where(better, loss, s.loss_best)


def _checkpoint(s: _State, rho: float, interval: int) -> None:
    """Halve eta and restart from x_max where condition 1 or 2 holds (Algorithm 1, in place)."""
    oscillating = s.increases < rho * interval
    stalled = ~s.halved_at_check & (s.loss_best <= s.loss_best_at_check)
    halve = oscillating | stalled
    s.step = torch.where(halve, s.step / 2, s.step)
    s.x = torch.where(halve.view(-1, *([1] * (s.x.dim() - 1))), s.x_best, s.x)
    s.grad = torch.where(halve.view(-1, *([1] * (s.grad.dim() - 1))), s.grad_best, s.grad)
    s.loss = torch.where(halve, s.loss_best, s.loss)
    s.halved_at_check = halve
    s.loss_best_at_check = s.loss_best.clone()
    s.increases = torch.zeros_like(s.increases)


def apgd_run(
    ctx: AttackContext,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    rows: torch.Tensor,
    steps: int,
    rho: float,
    loss_fn: LossFn,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run (Algorithm 1) from a random start, with early stopping.

    ``rows`` are the samples' positions in the attack's batch (for ``ctx.queries``); ``target`` holds
    the loss targets (``None``: untargeted loss); success is ``ctx.is_adversarial`` (with ``target``
    as the criterion's target only when ``ctx.targeted``).  Returns ``(x_adv, fooled)``:
    the first adversarial iterate, or the highest-loss point where none was found.
    """
    assert ctx.eps is not None
    out = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    marks = checkpoints(steps)
    gaps = {b: b - a for a, b in zip(marks, marks[1:])}

    def evaluate(xa: torch.Tensor, index: torch.Tensor, last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, gradient (zeros on the last step) and still-robust mask at ``xa``; records the successes."""
        tgt = subset(target, index)
        logits, loss, grad = loss_and_grad(ctx, xa, y[index], tgt, loss_fn, rows[index], need_grad=not last)
        adv = ctx.is_adversarial(logits, y[index], tgt if ctx.targeted else None)
        out[index[adv]] = xa[adv]
        fooled[index[adv]] = True
        return loss, (torch.zeros_like(xa) if grad is None else grad), ~adv

    x0 = random_start(ctx, x)
    loss, grad, keep = evaluate(x0, torch.arange(len(x), device=x.device), False)
    s = _State(
        torch.arange(len(x), device=x.device), x0, x0, grad, loss, x0, grad, loss,
        step=torch.full((len(x),), INITIAL_STEP * ctx.eps, device=x.device),
        increases=torch.zeros(len(x), device=x.device),
        loss_best_at_check=loss.clone(),
        halved_at_check=torch.zeros(len(x), dtype=torch.bool, device=x.device),
    ).select(keep)
    for k in range(1, steps + 1):
        if len(s.index) == 0:
            break
        x_new = _momentum_step(ctx, s, x[s.index], 1.0 if k == 1 else MOMENTUM)
        loss, grad, keep = evaluate(x_new, s.index, k == steps)
        s = s.select(keep)
        _advance(s, x_new[keep], loss[keep], grad[keep])
        if k in gaps:
            _checkpoint(s, rho, gaps[k])
        if ctx.progress is not None:
            ctx.progress(1)
    out[s.index] = s.x_best
    return out, fooled


class _APGD(Attack):
    """Shared hyperparameters and validation of the APGD attacks."""

    steps: int
    restarts: int
    rho: float

    defaults = {"steps": 100, "restarts": 1, "rho": 0.75}

    def check_params(self) -> None:
        check_positive_int(self.name, "steps", self.steps)
        check_positive_int(self.name, "restarts", self.restarts)
        rho = self.rho
        if not isinstance(rho, (int, float)) or isinstance(rho, bool) or not 0 < rho <= 1:
            raise PluginError(f"attack {self.name!r}: rho must be in (0, 1], got {rho!r}")

    def _restarts(
        self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
        x_adv: torch.Tensor, todo: torch.Tensor, loss_fn: LossFn,
    ) -> torch.Tensor:
        """Run ``restarts`` APGD runs on the rows ``todo`` (writing into ``x_adv``); return those still robust."""
        for _ in range(self.restarts):
            if len(todo) == 0:
                break
            cand, fooled = apgd_run(ctx, x[todo], y[todo], subset(target, todo), todo, self.steps, self.rho, loss_fn)
            x_adv[todo] = cand
            todo = todo[~fooled]
        return todo


class APGDCE(_APGD):
    """Auto-PGD on the cross-entropy (Croce & Hein 2020): step-size-free PGD with momentum.

    Hyperparameters: ``steps`` iterations per restart, ``restarts`` random restarts (each on the samples
    still robust), ``rho`` the fraction of loss-increasing steps below which the step size is halved.
    """

    name = "apgd-ce"

    def run(self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x.clone()
        self._restarts(ctx, x, y, ctx.targets, x_adv, torch.arange(len(x), device=x.device), ce_loss)
        return x_adv


def _dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Targeted DLR (eq. 6): pull the target's logit above the true label's (untargeted success)."""
    assert target is not None
    return dlr_targeted(logits, y, target)


def _dlr_hit_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Eq. 6 with the best non-target class in place of the true label: pull the target above all others."""
    assert target is not None
    rival = logits.detach().scatter(1, target[:, None], float("-inf")).argmax(dim=1)
    return dlr_targeted(logits, rival, target)


class APGDDLR(_APGD):
    """Targeted Auto-PGD on the DLR loss over the top wrong classes (AutoAttack's apgd-t).

    Hyperparameters as ``apgd-ce``, plus ``n_target_classes``: how many of the clean input's most likely
    wrong classes are tried in turn as DLR targets (capped at the number of classes minus one).
    """

    n_target_classes: int

    name = "apgd-dlr"
    defaults = {**_APGD.defaults, "n_target_classes": 9}

    def check_params(self) -> None:
        super().check_params()
        check_positive_int(self.name, "n_target_classes", self.n_target_classes)

    def run(self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check_classes(ctx.model.num_classes)
        x_adv = x.clone()
        todo = torch.arange(len(x), device=x.device)
        if ctx.targets is not None:
            self._restarts(ctx, x, y, ctx.targets, x_adv, todo, _dlr_hit_loss)
            return x_adv
        assert ctx.queries is not None
        ctx.queries += 1
        with torch.no_grad():
            clean = ctx.logits(x)
        wrong = clean.scatter(1, y[:, None], float("-inf"))
        n_targets = min(self.n_target_classes, clean.shape[1] - 1)
        ranked = wrong.topk(n_targets, dim=1).indices
        todo = todo[~ctx.is_adversarial(clean, y)]
        for rank in range(n_targets):
            todo = self._restarts(ctx, x, y, ranked[:, rank], x_adv, todo, _dlr_loss)
        return x_adv

    def _check_classes(self, num_classes: int | None) -> None:
        if num_classes is not None and num_classes < 4:
            raise UsageError(
                f"attack {self.name!r} needs at least 4 classes (the DLR loss); the model has {num_classes}"
            )
