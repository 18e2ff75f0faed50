"""Carlini & Wagner L2 attack.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
https://arxiv.org/abs/1608.04644 (summarised in papers 002 section 2 and 004).

Threat model: minimum-norm L2.  The attack ignores eps while searching and returns, per sample, the
adversarial example with the smallest L2 perturbation it found (the clean input where it failed).
It minimises ``||delta||_2^2 + c * f(x + delta)`` with Adam in tanh space, ``x' = lo + (hi - lo) *
(tanh(w) + 1) / 2``, so ``x'`` always lies in the model's value range, and binary-searches the
constant ``c`` per sample.  ``f`` is the margin loss of the paper's objective 6: untargeted
``max(Z_y - max_{i!=y} Z_i, -kappa)``, targeted ``max(max_{i!=t} Z_i - Z_t, -kappa)``.

Defaults and schedule differ from the paper's code (``initial_const=1e-3``, Adam at a constant
``lr=0.01``, up to 10,000 steps, a search step aborted at its first stall) on purpose, so that the
attack works at 100 steps per search step:

* ``lr=0.1``: Adam moves each tanh-space coordinate by about ``lr`` per step, and pixels sitting at a
  range bound start at ``atanh(1 - 1e-6) ~ 7.25``, where ``dx'/dw`` vanishes.  At ``lr=0.01`` they
  barely move in 100 steps and on the bundled MNIST CNN only 28% of the images are fooled, whatever
  ``c`` (torchattacks' CW fails silently for the same reason); at ``lr=0.1`` all are.
* Per-sample learning-rate decay replaces the paper's abort: every ``steps // 20`` steps a sample
  whose loss has not improved has its learning rate halved, and it leaves the search step once that
  is below 1% of ``lr``.  A large constant ``lr`` cannot settle on small perturbations (CIFAR-10
  ResNet-20: median L2 0.18 at constant ``lr``, 0.11 with the decay; DeepFool finds 0.13).
* ``initial_const=1.0`` fools almost every MNIST image in the first search step.  The search over
  ``c`` multiplies it by 10 until a success and divides it by 10 until a failure (the paper halves),
  then bisects, so it reaches the small ``c`` CIFAR-10 needs (about 1e-2) in a few steps; a sample's
  search ends early once ``c`` is bracketed within a factor of 1.5, or once a successful step no
  longer shrinks its perturbation by 1% (Adam's normalised steps make even a tiny ``c`` "succeed"
  through its first steps, so lowering ``c`` further would only waste steps).
* An iterate counts as adversarial only with a logit margin of at least ``MARGIN_TOL`` (the effective
  ``kappa`` is ``max(confidence, MARGIN_TOL)``), so the deployment runtime, whose outputs differ from
  the differentiable twin by float rounding, agrees with the attack.

On the bundled MNIST CNN the defaults fool every correctly classified image (median L2 about 1.67) in
about 450 gradient steps per image.

Example::

    out = CarliniWagnerL2()(model, x, y, eps=None, norm="l2")
    out = CarliniWagnerL2(binary_search_steps=5, confidence=2.0)(model, x, y, eps=None, norm="l2", targets=t)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from ..errors import PluginError
from .base import Attack, AttackContext

TANH_SCALE = 1.0 - 1e-6
"""Keeps ``atanh`` finite for inputs at the range bounds."""
CONST_MAX = 1e10
"""Initial upper bound of the search over ``c`` ("none found yet")."""
CONST_RATIO = 1.5
"""A sample's search over ``c`` ends once its bracket ``[lower, upper]`` is narrower than this ratio ..."""
IMPROVE_TOL = 0.99
"""... or once a successful search step shrinks its best L2 by less than ``1 - IMPROVE_TOL``."""
MARGIN_TOL = 1e-4
"""Logit margin an iterate must clear to count as adversarial, so the deployment runtime agrees."""
ABORT_TOL = 0.9999
"""A sample has stalled when its loss is above ``ABORT_TOL`` times its best loss at the previous checks."""
CHECKS = 20
"""Stall checks per search step."""
LR_DECAY = 0.5
"""A stalled sample's learning rate is multiplied by this ..."""
LR_FLOOR = 0.01
"""... and the sample stops the search step once its learning rate is below ``LR_FLOOR * lr``."""
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def to_tanh_space(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The ``w`` with ``from_tanh_space(w) == x`` (up to the ``TANH_SCALE`` shrink)."""
    unit = (x - lo) / (hi - lo) * 2.0 - 1.0
    return torch.atanh(unit * TANH_SCALE)


def from_tanh_space(w: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * (torch.tanh(w) + 1.0) / 2.0


def cw_margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """How far the sample is from success: ``Z_y - max_{i!=y} Z_i`` (or ``max_{i!=t} Z_i - Z_t``).

    Negative exactly when the argmax meets the criterion (ties aside).
    """
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return other - own if targeted else own - other


@dataclass
class _Best:
    """The smallest successful perturbation per sample found so far."""

    l2: torch.Tensor
    x_adv: torch.Tensor

    def update(self, index: torch.Tensor, x_new: torch.Tensor, l2: torch.Tensor, success: torch.Tensor) -> None:
        better = success & (l2 < self.l2[index])
        rows = index[better]
        self.l2[rows] = l2[better]
        self.x_adv[rows] = x_new[better]


@dataclass
class _ConstSearch:
    """Per-sample search over ``c``: x10 until a success, /10 until a failure, then bisection."""

    const: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor

    @classmethod
    def start(cls, n: int, initial: float, device: torch.device) -> _ConstSearch:
        full = partial(torch.full, (n,), device=device)
        return cls(full(float(initial)), full(0.0), full(CONST_MAX))

    def update(self, rows: torch.Tensor, success: torch.Tensor, improved: torch.Tensor) -> torch.Tensor:
        """Record which of ``rows`` succeeded at their ``c``; return the rows still worth another search step.

        A row is done once its bracket is narrower than ``CONST_RATIO``, or once it succeeded without
        improving its best perturbation: lowering ``c`` further no longer helps.
        """
        c, lower, upper = self.const[rows], self.lower[rows], self.upper[rows]
        upper = torch.where(success, torch.minimum(upper, c), upper)
        lower = torch.where(success, lower, torch.maximum(lower, c))
        has_upper, has_lower = upper < CONST_MAX, lower > 0
        step = torch.where(has_upper, c / 10, c * 10)
        self.const[rows] = torch.where(has_upper & has_lower, (lower + upper) / 2, step)
        self.lower[rows], self.upper[rows] = lower, upper
        settled = (has_upper & has_lower & (upper <= CONST_RATIO * lower)) | (success & ~improved)
        return rows[~settled]


class _Adam:
    """Element-wise Adam with a per-sample learning rate over a shrinking active set."""

    def __init__(self, like: torch.Tensor, lr: float) -> None:
        self.lr = torch.full((len(like),), lr, device=like.device)
        self.m = torch.zeros_like(like)
        self.v = torch.zeros_like(like)
        self.t = 0

    def step(self, w: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        b1, b2 = ADAM_BETAS
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        lr = self.lr.view(-1, *([1] * (w.dim() - 1)))
        return w - lr * m_hat / (v_hat.sqrt() + ADAM_EPS)

    def keep(self, rows: torch.Tensor) -> None:
        self.lr = self.lr[rows]
        self.m = self.m[rows]
        self.v = self.v[rows]


class CarliniWagnerL2(Attack):
    """Carlini & Wagner L2 (2017): minimum-L2 adversarial examples by tanh-space Adam + binary search over c."""

    binary_search_steps: int
    steps: int
    lr: float
    initial_const: float
    confidence: float

    name = "cw-l2"
    norms = ("l2",)
    minimum_norm = True
    defaults = {
        "binary_search_steps": 9,
        "steps": 100,
        "lr": 0.1,
        "initial_const": 1.0,
        "confidence": 0.0,
    }

    def check_params(self) -> None:
        if self.binary_search_steps < 1:
            raise PluginError(f"attack 'cw-l2': binary_search_steps must be >= 1, got {self.binary_search_steps}")
        if self.steps < 1:
            raise PluginError(f"attack 'cw-l2': steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise PluginError(f"attack 'cw-l2': lr must be > 0, got {self.lr}")
        if not 0 < self.initial_const < CONST_MAX:
            raise PluginError(f"attack 'cw-l2': initial_const must be in (0, {CONST_MAX:g}), got {self.initial_const}")
        if not self.confidence >= 0:
            raise PluginError(f"attack 'cw-l2': confidence must be >= 0, got {self.confidence}")

    def run(self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = ctx.targets if ctx.targets is not None else y
        n = len(x)
        search = _ConstSearch.start(n, self.initial_const, x.device)
        best = _Best(torch.full((n,), float("inf"), device=x.device), x.clone())
        w0 = to_tanh_space(x, ctx.lo, ctx.hi)
        rows = torch.arange(n, device=x.device)
        for _ in range(self.binary_search_steps):
            before = best.l2[rows]
            success = self._search_step(ctx, x, w0, labels, search.const, best, rows)
            rows = search.update(rows, success, best.l2[rows] < IMPROVE_TOL * before)
            if len(rows) == 0:
                break
        return best.x_adv

    def _search_step(
        self,
        ctx: AttackContext,
        x: torch.Tensor,
        w0: torch.Tensor,
        labels: torch.Tensor,
        const: torch.Tensor,
        best: _Best,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """Optimise samples ``rows`` at their current ``c``; return which of them succeeded at least once."""
        index = rows
        success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_loss = torch.full((len(x),), float("inf"), device=x.device)
        w = w0[rows]
        adam = _Adam(w, self.lr)
        check_every = max(1, self.steps // CHECKS)
        for step in range(self.steps):
            loss, l2, hit, x_new, grad = self._loss_and_grad(ctx, w, x[index], labels[index], const[index])
            assert ctx.queries is not None
            ctx.queries[index] += 1
            success[index] |= hit
            best.update(index, x_new, l2, hit)
            w = adam.step(w, grad)
            if ctx.progress is not None:
                ctx.progress(1)
            if (step + 1) % check_every == 0:
                stalled = loss > ABORT_TOL * best_loss[index]
                best_loss[index] = torch.minimum(loss, best_loss[index])
                adam.lr[stalled] *= LR_DECAY
                keep = adam.lr >= self.lr * LR_FLOOR
                if not keep.all():
                    index, w = index[keep], w[keep]
                    adam.keep(keep)
                    if len(index) == 0:
                        break
        return success[rows]

    def _loss_and_grad(
        self, ctx: AttackContext, w: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, const: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample loss, L2 distance, success mask, the iterate and d loss / d w."""
        w = w.detach().requires_grad_(True)
        x_new = from_tanh_space(w, ctx.lo, ctx.hi)
        logits = ctx.logits(x_new)
        l2 = (x_new - x).flatten(1).pow(2).sum(dim=1)
        margin = cw_margin(logits, labels, ctx.targeted)
        kappa = max(self.confidence, MARGIN_TOL)
        loss = l2 + const * margin.clamp_min(-kappa)
        (grad,) = torch.autograd.grad(loss.sum(), w)
        hit = margin.detach() <= -kappa
        return loss.detach(), l2.detach().sqrt(), hit, x_new.detach(), grad
