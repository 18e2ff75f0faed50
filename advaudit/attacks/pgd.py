"""Projected Gradient Descent.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083 (lecture notes 000, "Projected gradient descent").

Threat model: white-box, fixed budget, Linf or L2 ball of radius eps intersected with the value range.
From a random point of the ball, take ``steps`` steps of size ``rel_stepsize * eps`` along the sign of
the gradient (Linf) or the L2-normalised gradient (L2), projecting back after each step.  Untargeted:
ascend the cross-entropy of the true label.  Targeted: descend the cross-entropy of the target.

Early stopping: a sample whose current iterate is already adversarial (on the logits computed for its
gradient anyway) is frozen at that iterate and dropped from the batch, so later steps only pay for the
samples still robust.  Restarts only re-run the samples no restart has fooled yet.  The returned
candidate is the first adversarial iterate found, or the last iterate of the last restart.

Example::

    out = PGD(steps=40)(model, x, y, eps=0.3, norm="linf", seed=0)
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from ..errors import PluginError
from .base import Attack, AttackContext, rand_normal, rand_uniform
from .criterion import Criterion
from .fgsm import gradient_step
from .geometry import project
from .losses import cross_entropy

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
"""Per-sample loss to *maximise*: ``loss(logits, y, target)`` -> shape (N,)."""

MADRY_TRAVEL = 2.5
"""Default step size is ``2.5 * eps / steps`` (Madry et al.): enough to cross the ball from any start."""


def ce_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy of the true label (untargeted), or minus that of the target (targeted)."""
    if target is None:
        return cross_entropy(logits, y)
    return -cross_entropy(logits, target)


def ball_start(
    x: torch.Tensor, *, norm: str, eps: float, bounds: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """A uniformly random point of the eps ball around ``x`` (Linf cube or L2 ball), in ``bounds``.

    Drawn from the seeded CPU ``generator`` and then moved to ``x``'s device: the same draw on every device."""
    if norm == "linf":
        delta = (2 * rand_uniform(x.shape, generator, x.device) - 1) * eps
    else:
        direction = gradient_step(rand_normal(x.shape, generator, x.device), "l2")
        dim = x[0].numel()
        radius = eps * rand_uniform((len(x),), generator, x.device) ** (1.0 / dim)
        delta = direction * radius.view(-1, *([1] * (x.dim() - 1)))
    return project(x + delta, x, norm=norm, eps=eps, bounds=bounds)


def random_start(ctx: AttackContext, x: torch.Tensor) -> torch.Tensor:
    """:func:`ball_start` with the attack context's norm, budget, value range and generator."""
    assert ctx.eps is not None
    return ball_start(x, norm=ctx.norm, eps=ctx.eps, bounds=(ctx.lo, ctx.hi), generator=ctx.generator)


def logits_loss_grad(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    loss_fn: LossFn,
    need_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits of ``x``, per-sample loss and (optionally) the input gradient of the summed loss."""
    if not need_grad:
        with torch.no_grad():
            logits = logits_fn(x)
            return logits, loss_fn(logits, y, target), None
    with torch.enable_grad():
        x_req = x.detach().requires_grad_(True)
        logits = logits_fn(x_req)
        loss = loss_fn(logits, y, target)
        (grad,) = torch.autograd.grad(loss.sum(), x_req)
    return logits.detach(), loss.detach(), grad


def loss_and_grad(
    ctx: AttackContext,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    loss_fn: LossFn,
    index: torch.Tensor,
    need_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits, per-sample loss and (optionally) its input gradient; counts one query per row of ``index``.

    Computed in the model's search precision (:meth:`advaudit.models.Model.search_logits`): rows that
    look adversarial always carry float32 logits, so success is decided in float32."""
    assert ctx.queries is not None
    ctx.queries[index] += 1
    return logits_loss_grad(lambda t: ctx.model.search_logits(t, y), x, y, target, loss_fn, need_grad)


def subset(t: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    """``t[rows]``, passing ``None`` (no targets) through."""
    return None if t is None else t[rows]


def pgd_iterate(
    logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    *,
    start: torch.Tensor,
    steps: int,
    step_size: float,
    norm: str,
    eps: float,
    bounds: tuple[float, float],
    loss_fn: LossFn = ce_loss,
    stop: Criterion | None = None,
    on_step: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The PGD iteration itself, free of any attack context: ``steps`` ascent steps of ``loss_fn`` from
    ``start``, each of size ``step_size`` along :func:`~.fgsm.gradient_step` and projected back into the
    ``norm`` ball of radius ``eps`` around ``x`` and into ``bounds``.

    ``logits_fn(index, x_batch)`` gives the logits of ``x_batch``, the iterates of the samples ``index``
    (positions in ``x``); ``y`` and ``target`` are what ``loss_fn`` receives (sliced like the batch:
    labels, or whatever reference the loss compares with).  With ``stop`` (a
    criterion over the samples of ``x``), every iterate is checked, the final one included, and a
    sample is frozen at its first successful iterate (early stopping); without it, no check is made
    and the last iterate is returned.  ``on_step`` is called after each step.  Returns
    ``(x_adv, fooled)``."""
    out = torch.empty_like(start)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    idx = torch.arange(len(x), device=x.device)
    xa = start
    for t in range(steps + 1):
        last = t == steps
        if last and stop is None:
            break
        logits, _, grad = logits_loss_grad(
            partial(logits_fn, idx), xa, y[idx], subset(target, idx), loss_fn, need_grad=not last
        )
        if stop is not None:
            adv = stop.at(idx).hit(logits.argmax(dim=-1), y[idx])
            fooled[idx[adv]] = True
            out[idx[adv]] = xa[adv]
            keep = ~adv
            idx, xa, grad = idx[keep], xa[keep], None if grad is None else grad[keep]
        if last or len(idx) == 0:
            break
        assert grad is not None
        xa = project(xa + step_size * gradient_step(grad, norm), x[idx], norm=norm, eps=eps, bounds=bounds)
        if on_step is not None:
            on_step()
    out[idx] = xa
    return out, fooled


def pgd_run(
    ctx: AttackContext,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    rows: torch.Tensor,
    x_start: torch.Tensor,
    steps: int,
    step_size: float,
    loss_fn: LossFn = ce_loss,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One PGD run from ``x_start`` with early stopping (:func:`pgd_iterate` in the attack's context).

    ``rows`` are the samples' positions in the attack's batch (for ``ctx.queries``); ``target`` holds the
    loss targets (``None`` untargeted); success is ``ctx.is_adversarial``.  Returns ``(x_adv, fooled)``:
    each sample's first adversarial iterate (``fooled`` True) or its last iterate.
    """
    assert ctx.eps is not None and ctx.queries is not None
    queries = ctx.queries

    def logits_fn(index: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        queries[rows[index]] += 1
        return ctx.model.search_logits(z, y[index])

    progress = ctx.progress
    return pgd_iterate(
        logits_fn, x, y, target, start=x_start, steps=steps, step_size=step_size, norm=ctx.norm, eps=ctx.eps,
        bounds=(ctx.lo, ctx.hi), loss_fn=loss_fn, stop=Criterion(target if ctx.targeted else None),
        on_step=None if progress is None else lambda: progress(1),
    )


def check_positive_int(attack: str, key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PluginError(f"attack {attack!r}: {key} must be a positive integer, got {value!r}")


class PGD(Attack):
    """Projected Gradient Descent (Madry et al. 2018), Linf/L2, random start, early stopping, restarts.

    Hyperparameters: ``steps`` gradient steps per restart; ``rel_stepsize`` the step size as a fraction
    of eps (``None``: Madry's ``2.5 / steps``, i.e. the steps add up to 2.5 eps); ``random_start`` a
    uniform random start in the eps ball (else the clean input); ``restarts`` runs, each on the samples
    the previous ones did not fool.
    """

    steps: int
    rel_stepsize: float | None
    random_start: bool
    restarts: int

    name = "pgd"
    defaults = {"steps": 40, "rel_stepsize": None, "random_start": True, "restarts": 1}

    def check_params(self) -> None:
        check_positive_int(self.name, "steps", self.steps)
        check_positive_int(self.name, "restarts", self.restarts)
        rel = self.rel_stepsize
        if rel is not None and (not isinstance(rel, (int, float)) or isinstance(rel, bool) or not rel > 0):
            raise PluginError(f"attack {self.name!r}: rel_stepsize must be a positive number, got {rel!r}")
        if not isinstance(self.random_start, bool):
            raise PluginError(f"attack {self.name!r}: random_start must be true or false, got {self.random_start!r}")

    @property
    def relative_step(self) -> float:
        return MADRY_TRAVEL / self.steps if self.rel_stepsize is None else float(self.rel_stepsize)

    def run(self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert ctx.eps is not None
        x_adv = x.clone()
        todo = torch.arange(len(x), device=x.device)
        for _ in range(self.restarts):
            xs = x[todo]
            start = random_start(ctx, xs) if self.random_start else xs
            cand, fooled = pgd_run(
                ctx, xs, y[todo], subset(ctx.targets, todo), todo, start, self.steps, self.relative_step * ctx.eps
            )
            x_adv[todo] = cand
            todo = todo[~fooled]
            if len(todo) == 0 or not self.random_start:
                break
        return x_adv
