"""Carlini & Wagner L2 attack.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
https://arxiv.org/abs/1608.04644 (summarised in papers 002 section 2 and 004).

Threat model: minimum-norm L2.  The attack ignores eps while searching and returns, per sample, the
adversarial example with the smallest L2 perturbation it found (the clean input where it failed).
It minimises ``||delta||_2^2 + c * f(x + delta)`` with Adam in tanh space, ``x' = lo + (hi - lo) *
(tanh(w) + 1) / 2``, so ``x'`` always lies in the model's value range, and binary-searches the
constant ``c`` per sample.  ``f`` is the margin loss of the paper's objective 6: untargeted
``max(Z_y - max_{i!=y} Z_i, -kappa)``, targeted ``max(max_{i!=t} Z_i - Z_t, -kappa)``.

Defaults differ from the paper's (``initial_const=1e-3``, ``lr=0.01``, 10,000 steps) on purpose: at
100 steps per search step those settings leave most images untouched, because ``c = 1e-3`` is far too
small to flip a label and Adam at ``lr = 0.01`` barely moves pixels sitting at the range bounds (where
``d x' / d w`` vanishes).  ``initial_const=1.0`` flips almost every image in the first search step and
the binary search then shrinks the perturbation; ``lr=0.05`` moves saturated pixels within the step
budget.  Each search step stops early, per sample, once its loss stops improving (as in the original
code: checked every ``steps // 10`` iterations), which makes the attack several times faster.

Example::

    out = CarliniWagnerL2()(model, x, y, eps=None, norm="l2")
    out = CarliniWagnerL2(binary_search_steps=5, confidence=2.0)(model, x, y, eps=None, norm="l2", targets=t)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import PluginError
from .base import Attack, AttackContext

TANH_SCALE = 1.0 - 1e-6
"""Keeps ``atanh`` finite for inputs at the range bounds."""
CONST_MAX = 1e10
"""Upper bound of the binary search over ``c``; an upper bound at or above 1e9 means "none found yet"."""
MARGIN_TOL = 1e-4
"""Logit margin an iterate must clear to count as adversarial, so the deployment runtime agrees."""
ABORT_TOL = 0.9999
"""A sample stops a search step when its loss is above ``ABORT_TOL`` times its loss a check ago."""
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


class _Adam:
    """Element-wise Adam over a shrinking active set (rows can be dropped between steps)."""

    def __init__(self, like: torch.Tensor, lr: float) -> None:
        self.lr = lr
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
        return w - self.lr * m_hat / (v_hat.sqrt() + ADAM_EPS)

    def keep(self, rows: torch.Tensor) -> None:
        self.m = self.m[rows]
        self.v = self.v[rows]


class CarliniWagnerL2(Attack):
    """Carlini & Wagner L2 (2017): minimum-L2 adversarial examples by tanh-space Adam + binary search over c."""

    name = "cw-l2"
    norms = ("l2",)
    minimum_norm = True
    defaults: dict = {
        "binary_search_steps": 9,
        "steps": 100,
        "lr": 0.05,
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
        const = torch.full((n,), float(self.initial_const), device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), CONST_MAX, device=x.device)
        best = _Best(torch.full((n,), float("inf"), device=x.device), x.clone())
        w0 = to_tanh_space(x, ctx.lo, ctx.hi)
        for _ in range(self.binary_search_steps):
            success = self._search_step(ctx, x, w0, labels, const, best)
            upper = torch.where(success, torch.minimum(upper, const), upper)
            lower = torch.where(success, lower, torch.maximum(lower, const))
            bounded = upper < CONST_MAX / 10
            const = torch.where(bounded, (lower + upper) / 2, const * 10)
        return best.x_adv

    def _search_step(
        self,
        ctx: AttackContext,
        x: torch.Tensor,
        w0: torch.Tensor,
        labels: torch.Tensor,
        const: torch.Tensor,
        best: _Best,
    ) -> torch.Tensor:
        """Optimise every sample at its current ``c``; return which samples succeeded at least once."""
        n = len(x)
        index = torch.arange(n, device=x.device)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        w = w0.clone()
        adam = _Adam(w, self.lr)
        prev_loss = torch.full((n,), float("inf"), device=x.device)
        check_every = max(1, self.steps // 10)
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
                keep = loss <= ABORT_TOL * prev_loss[index]
                prev_loss[index] = loss
                if not keep.all():
                    index, w = index[keep], w[keep]
                    adam.keep(keep)
                    if len(index) == 0:
                        break
        return success

    def _loss_and_grad(
        self, ctx: AttackContext, w: torch.Tensor, x: torch.Tensor, labels: torch.Tensor, const: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample loss, squared L2, success mask, the iterate and d loss / d w."""
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
