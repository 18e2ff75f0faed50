"""Square Attack: score-based black-box random search with square-shaped updates.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, https://arxiv.org/abs/1912.00049 (Algorithms 1-3).

Threat model: black box.  The attack only reads the log-probabilities the deployment runtime returns
(:meth:`AttackContext.scores`), so it runs on models without gradients.  Linf or L2 ball of radius
eps, untargeted (minimise the margin ``log p_y - max_{k != y} log p_k``) or targeted (minimise the
cross-entropy of the target, as in the paper).

Each iteration proposes, for every sample not yet adversarial, one update on a random square window
(its own position per sample) and evaluates all of them in one batched query; an update is kept when
it lowers the loss.  The window side follows the paper's schedule: a fraction ``p`` of the pixels,
halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10 000-query run,
rescaled to the ``queries`` budget.

* Linf: vertical-stripe initialisation (every column of every channel shifted by +-eps), then each
  window is set to one random +-eps value per channel.
* L2: initialisation with a 5x5 grid of "pseudo-Gaussian" bumps of random sign, then each update
  moves the mass of a second random window into the first window and adds a new bump there, so the
  perturbation stays on the sphere of radius eps (before clipping into the value range).

Queries: one per sample for the initial point, then one per sample and iteration while the sample is
not adversarial; a sample stops (and stops counting queries) once it is.  The clean input is not
queried.  ``queries`` caps the total per sample.

``p_init=0.8`` is the default of the authors' AutoAttack implementation (and their setting for MNIST);
the paper uses 0.05 (Linf) and 0.1 (L2) for undefended ImageNet models: lower it for large images.
Inputs must be images (C, H, W).

Example::

    out = Square(queries=1000)(model, x, y, eps=0.3, norm="linf", seed=0)
    out.queries          # per-sample number of model queries
"""

from __future__ import annotations

import math

import torch

from ..errors import PluginError, UsageError
from .base import Attack, AttackContext, rand_uniform
from .losses import cross_entropy, margin

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Iterations (of a 10 000-query run) after which ``p`` is halved."""
SCHEDULE_LENGTH = 10_000
MAX_REDRAWS = 8
"""Linf: how often a window update that would change nothing is redrawn before its signs are flipped."""


def p_schedule(p_init: float, it: int, budget: int) -> float:
    """Fraction of pixels changed at iteration ``it`` of a ``budget``-query run (piecewise constant)."""
    it = int(it / budget * SCHEDULE_LENGTH)
    return p_init / 2 ** sum(it > b for b in SCHEDULE)


def square_side(p: float, h: int, w: int) -> int:
    """Side of a square window covering about a fraction ``p`` of an image's pixels."""
    return min(max(int(round(math.sqrt(p * h * w))), 1), h, w)


def random_signs(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.where(rand_uniform(shape, gen, device) < 0.5, -1.0, 1.0)


def random_positions(n: int, high: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` integers uniform in ``[0, high]``."""
    return (rand_uniform((n,), gen, device) * (high + 1)).long().clamp_max(high)


def window_mask(vh: torch.Tensor, vw: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """Boolean (n, 1, h, w) masks of the s x s windows with top-left corners (vh, vw)."""
    rows = torch.arange(h, device=vh.device)
    cols = torch.arange(w, device=vw.device)
    in_rows = (rows >= vh[:, None]) & (rows < vh[:, None] + s)
    in_cols = (cols >= vw[:, None]) & (cols < vw[:, None] + s)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def window_index(vh: torch.Tensor, vw: torch.Tensor, s: int) -> tuple[torch.Tensor, ...]:
    """Advanced index selecting each sample's s x s window from a channels-last (n, h, w, c) view."""
    offsets = torch.arange(s, device=vh.device)
    rows = (vh[:, None] + offsets)[:, :, None]
    cols = (vw[:, None] + offsets)[:, None, :]
    return torch.arange(len(vh), device=vh.device)[:, None, None], rows, cols


def get_window(t: torch.Tensor, index: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The (n, c, s, s) windows of ``t`` (n, c, h, w)."""
    return t.permute(0, 2, 3, 1)[index].permute(0, 3, 1, 2)


def put_window(t: torch.Tensor, index: tuple[torch.Tensor, ...], value: torch.Tensor) -> None:
    """Write (n, c, s, s) ``value`` into the windows of ``t`` in place."""
    t.permute(0, 2, 3, 1)[index] = value.permute(0, 2, 3, 1)


def bump_rectangle(a: int, b: int, device: torch.device) -> torch.Tensor:
    """An (a, b) pseudo-Gaussian bump: nested rectangles around the centre, weights 1/(k+1)^2."""
    r = torch.arange(a, device=device)[:, None]
    c = torch.arange(b, device=device)[None, :]
    ring = torch.maximum((r - a // 2).abs(), (c - b // 2).abs())  # Chebyshev distance to the centre
    k = torch.arange(max(a // 2 + 1, b // 2 + 1), device=device)
    # the k-th rectangle covers the cells within Chebyshev distance k of the centre
    delta = ((ring[None] <= k[:, None, None]).float() / (k[:, None, None] + 1.0) ** 2).sum(0)
    return delta / delta.norm().clamp_min(1e-12)


def bumps(s: int, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` unit-norm (s, s) updates: a positive bump over a negative one, randomly transposed."""
    eta = torch.cat([bump_rectangle(s // 2, s, device), -bump_rectangle(s - s // 2, s, device)])
    eta = eta / eta.norm().clamp_min(1e-12)
    flip = rand_uniform((n, 1, 1), gen, device) < 0.5
    return torch.where(flip, eta.t(), eta)


class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020): query-efficient black-box random search (Linf, L2)."""

    name = "square"
    uses_gradients = False
    defaults: dict = {"queries": 5000, "p_init": 0.8}

    def check_params(self) -> None:
        if not isinstance(self.queries, int) or self.queries < 1:
            raise PluginError(f"square: queries must be a positive integer, got {self.queries!r}")
        if not 0.0 < float(self.p_init) <= 1.0:
            raise PluginError(f"square: p_init must be in (0, 1], got {self.p_init!r}")

    def run(self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise UsageError(f"square needs image inputs (C, H, W), not samples of shape {tuple(x.shape[1:])}",
                             "use substitute")
        assert ctx.eps is not None
        labels = ctx.targets if ctx.targets is not None else y
        every = torch.arange(len(x), device=x.device)
        init = self._init_linf if ctx.norm == "linf" else self._init_l2
        x_best = init(ctx, x)
        loss, success = self._evaluate(ctx, x_best, labels, every)
        for it in range(self.queries - 1):
            active = (~success).nonzero().squeeze(1)
            if len(active) == 0:
                break
            p = p_schedule(float(self.p_init), it, self.queries)
            propose = self._propose_linf if ctx.norm == "linf" else self._propose_l2
            x_new = propose(ctx, x[active], x_best[active], p)
            new_loss, new_success = self._evaluate(ctx, x_new, labels[active], active)
            better = (new_loss < loss[active]) | new_success
            keep = active[better]
            loss[keep] = new_loss[better]
            success[keep] = new_success[better]
            x_best[keep] = x_new[better]
            if ctx.progress is not None:
                ctx.progress(1)
        return x_best

    # ------------------------------------------------------------------ loss
    @staticmethod
    def _evaluate(
        ctx: AttackContext, x: torch.Tensor, labels: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss to minimise and success mask for the rows ``index`` of the batch (one query each)."""
        log_probs = ctx.scores(x, index)
        if ctx.targets is not None:
            return cross_entropy(log_probs, labels), ctx.is_adversarial(log_probs, labels, labels)
        return -margin(log_probs, labels), ctx.is_adversarial(log_probs, labels)

    # ------------------------------------------------------------------ Linf
    @staticmethod
    def _init_linf(ctx: AttackContext, x: torch.Tensor) -> torch.Tensor:
        """Vertical stripes: one random +-eps per (sample, channel, column)."""
        n, c, _, w = x.shape
        assert ctx.eps is not None
        return ctx.clip(x + ctx.eps * random_signs((n, c, 1, w), ctx.generator, x.device))

    @staticmethod
    def _propose_linf(ctx: AttackContext, x: torch.Tensor, x_best: torch.Tensor, p: float) -> torch.Tensor:
        """Set one random square per sample to a random +-eps per channel (redrawn while it changes nothing)."""
        n, c, h, w = x.shape
        assert ctx.eps is not None
        s = square_side(p, h, w)
        gen = ctx.generator
        mask = window_mask(random_positions(n, h - s, gen, x.device), random_positions(n, w - s, gen, x.device), s, h, w)
        signs = random_signs((n, c, 1, 1), gen, x.device)
        for _ in range(MAX_REDRAWS):
            same = ((ctx.clip(x + ctx.eps * signs) - x_best).abs() < 1e-7) | ~mask
            unchanged = same.flatten(1).all(dim=1)
            if not unchanged.any():
                break
            signs = torch.where(unchanged[:, None, None, None], random_signs((n, c, 1, 1), gen, x.device), signs)
        else:
            signs = torch.where(unchanged[:, None, None, None], -signs, signs)
        return ctx.clip(torch.where(mask, x + ctx.eps * signs, x_best))

    # -------------------------------------------------------------------- L2
    @staticmethod
    def _init_l2(ctx: AttackContext, x: torch.Tensor) -> torch.Tensor:
        """A grid of bumps (5x5 on a square image), each with a random sign per (sample, channel), scaled to norm eps."""
        n, c, h, w = x.shape
        assert ctx.eps is not None
        s = max(min(h, w) // 5, 1)
        delta = torch.zeros_like(x)
        top, left = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
        for vh in range(top, h - s + 1, s):
            for vw in range(left, w - s + 1, s):
                eta = bumps(s, 1, ctx.generator, x.device)
                sign = random_signs((n, c, 1, 1), ctx.generator, x.device)
                delta[:, :, vh : vh + s, vw : vw + s] += eta * sign
        return ctx.clip(x + ctx.eps * _unit(delta))

    @staticmethod
    def _propose_l2(ctx: AttackContext, x: torch.Tensor, x_best: torch.Tensor, p: float) -> torch.Tensor:
        """Move the mass of a random window 2 into a random window 1 and add a new bump there (paper, Alg. 3)."""
        n, c, h, w = x.shape
        assert ctx.eps is not None
        gen = ctx.generator
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = min(s + 1 - s % 2, h, w)
        vh1, vw1 = random_positions(n, h - s, gen, x.device), random_positions(n, w - s, gen, x.device)
        vh2, vw2 = random_positions(n, h - s, gen, x.device), random_positions(n, w - s, gen, x.device)
        mask1, mask2 = window_mask(vh1, vw1, s, h, w), window_mask(vh2, vw2, s, h, w)
        index1 = window_index(vh1, vw1, s)

        delta = x_best - x
        old = get_window(delta, index1)
        norm_image = delta.flatten(1).norm(dim=1).view(n, 1, 1, 1)
        norm_windows = (delta * (mask1 | mask2)).norm(dim=(2, 3), keepdim=True)  # per channel
        budget = ((ctx.eps**2 - norm_image**2).clamp_min(0.0) / c + norm_windows**2).sqrt()

        new = bumps(s, n, gen, x.device)[:, None] * random_signs((n, c, 1, 1), gen, x.device)
        new = new + old / (old.norm(dim=(2, 3), keepdim=True) + 1e-12)
        new = new / new.norm(dim=(2, 3), keepdim=True).clamp_min(1e-12) * budget

        delta = delta.masked_fill(mask2, 0.0)
        put_window(delta, index1, new)
        return ctx.clip(x + ctx.eps * _unit(delta))


def _unit(delta: torch.Tensor) -> torch.Tensor:
    """Scale every sample of ``delta`` to unit L2 norm."""
    return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (delta.dim() - 1)))
