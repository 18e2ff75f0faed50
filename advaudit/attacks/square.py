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
Flat inputs are treated as a single row of features, with windows becoming segments.

Example::

    out = Square(queries=1000)(model, x, y, eps=0.3, norm="linf", seed=0)
    out.queries          # per-sample number of model queries
"""

from __future__ import annotations

import math

import torch

from ..errors import PluginError
from .base import Attack, AttackContext, rand_uniform
from .losses import cross_entropy, margin

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
"""Iterations (of a 10 000-query run) after which ``p`` is halved."""
SCHEDULE_LENGTH = 10_000
MAX_REDRAWS = 8
"""Linf: how often a window update that would change nothing is redrawn (the paper redraws until it does)."""


def p_schedule(p_init: float, it: int, budget: int) -> float:
    """Fraction of pixels changed at iteration ``it`` of a ``budget``-query run (piecewise constant)."""
    it = int(it / budget * SCHEDULE_LENGTH)
    return p_init / 2 ** sum(it > b for b in SCHEDULE)


def window_shape(p: float, h: int, w: int, odd: bool = False) -> tuple[int, int]:
    """(rows, cols) of a window covering about a fraction ``p`` of an h x w image.

    A square on images; a segment along the row (or column) when the image is a single row (column),
    as flat inputs are.  ``odd``: at least 3 and odd (the L2 attack's windows).
    """
    area = p * h * w
    side = int(round(area if min(h, w) == 1 else math.sqrt(area)))
    if odd:
        side = max(side, 3)
        side += 1 - side % 2
    side = max(side, 1)
    if h == 1:
        return 1, min(side, w)
    if w == 1:
        return min(side, h), 1
    return min(side, h, w), min(side, h, w)


def random_signs(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.where(rand_uniform(shape, gen, device) < 0.5, -1.0, 1.0)


def random_positions(n: int, high: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` integers uniform in ``[0, high]``."""
    return (rand_uniform((n,), gen, device) * (high + 1)).long().clamp_max(high)


def random_windows(
    n: int, size: tuple[int, int], h: int, w: int, gen: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners (rows, cols) of ``n`` windows of ``size`` placed uniformly inside an h x w image."""
    return random_positions(n, h - size[0], gen, device), random_positions(n, w - size[1], gen, device)


def window_mask(corner: tuple[torch.Tensor, torch.Tensor], size: tuple[int, int], h: int, w: int) -> torch.Tensor:
    """Boolean (n, 1, h, w) masks of the windows of ``size`` at ``corner``."""
    vh, vw = corner
    rows = torch.arange(h, device=vh.device)
    cols = torch.arange(w, device=vw.device)
    in_rows = (rows >= vh[:, None]) & (rows < vh[:, None] + size[0])
    in_cols = (cols >= vw[:, None]) & (cols < vw[:, None] + size[1])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def window_index(corner: tuple[torch.Tensor, torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Advanced index selecting each sample's window from a channels-last (n, h, w, c) view."""
    vh, vw = corner
    rows = (vh[:, None] + torch.arange(size[0], device=vh.device))[:, :, None]
    cols = (vw[:, None] + torch.arange(size[1], device=vw.device))[:, None, :]
    return torch.arange(len(vh), device=vh.device)[:, None, None], rows, cols


def get_window(t: torch.Tensor, index: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The (n, c, rows, cols) windows of ``t`` (n, c, h, w)."""
    return t.permute(0, 2, 3, 1)[index].permute(0, 3, 1, 2)


def put_window(t: torch.Tensor, index: tuple[torch.Tensor, ...], value: torch.Tensor) -> None:
    """Write (n, c, rows, cols) ``value`` into the windows of ``t`` in place."""
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


def bump_pair(a: int, b: int, device: torch.device) -> torch.Tensor:
    """A unit-norm (a, b) update: a positive bump over a negative one (split along the rows)."""
    eta = torch.cat([bump_rectangle(a // 2, b, device), -bump_rectangle(a - a // 2, b, device)])
    return eta / eta.norm().clamp_min(1e-12)


def bumps(size: tuple[int, int], n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` (rows, cols) bump pairs: squares are transposed at random, rectangles split along their long side."""
    rows, cols = size
    if rows < cols:
        return bump_pair(cols, rows, device).t().expand(n, rows, cols)
    eta = bump_pair(rows, cols, device)
    if rows > cols:
        return eta.expand(n, rows, cols)
    flip = rand_uniform((n, 1, 1), gen, device) < 0.5
    return torch.where(flip, eta.t(), eta)


class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020): query-efficient black-box random search (Linf, L2)."""

    queries: int
    p_init: float

    name = "square"
    uses_gradients = False
    defaults = {"queries": 5000, "p_init": 0.8}

    def check_params(self) -> None:
        if not isinstance(self.queries, int) or self.queries < 1:
            raise PluginError(f"square: queries must be a positive integer, got {self.queries!r}")
        if not 0.0 < float(self.p_init) <= 1.0:
            raise PluginError(f"square: p_init must be in (0, 1], got {self.p_init!r}")

    def run(self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        images = x if x.dim() == 4 else x.reshape(len(x), 1, 1, -1)  # flat inputs: one row of features
        labels = ctx.targets if ctx.targets is not None else y
        linf = ctx.norm == "linf"
        init, propose = (self._init_linf, self._propose_linf) if linf else (self._init_l2, self._propose_l2)
        x_best = init(ctx, images)
        loss, success = self._evaluate(ctx, x_best, labels, y, torch.arange(len(x), device=x.device), x.shape)
        for it in range(self.queries - 1):
            active = (~success).nonzero().squeeze(1)
            if len(active) == 0:
                break
            p = p_schedule(float(self.p_init), it, self.queries)
            x_new = propose(ctx, images[active], x_best[active], p)
            new_loss, new_success = self._evaluate(ctx, x_new, labels[active], y[active], active, x.shape)
            better = (new_loss < loss[active]) | new_success
            keep = active[better]
            loss[keep] = new_loss[better]
            success[keep] = new_success[better]
            x_best[keep] = x_new[better]
            if ctx.progress is not None:
                ctx.progress(1)
        return x_best.reshape(x.shape)

    # ------------------------------------------------------------------ loss
    @staticmethod
    def _evaluate(
        ctx: AttackContext, x: torch.Tensor, labels: torch.Tensor, truth: torch.Tensor, index: torch.Tensor,
        shape: torch.Size,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss to minimise and success mask for the rows ``index`` of the batch (one query each);
        ``labels`` are the targets (targeted) or the true labels ``truth``."""
        log_probs = ctx.scores(x.reshape(len(x), *shape[1:]), index, labels=truth)
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
        """Set one random window per sample to a random +-eps per channel (redrawn while it changes nothing)."""
        n, c, h, w = x.shape
        assert ctx.eps is not None
        gen = ctx.generator
        size = window_shape(p, h, w)
        index = window_index(random_windows(n, size, h, w, gen, x.device), size)
        x_win, best_win = get_window(x, index), get_window(x_best, index)  # (n, c, rows, cols)
        signs = random_signs((n, c, 1, 1), gen, x.device)
        for _ in range(MAX_REDRAWS):
            unchanged = ((ctx.clip(x_win + ctx.eps * signs) - best_win).abs() < 1e-7).flatten(1).all(dim=1)
            if not unchanged.any():
                break
            signs = torch.where(unchanged[:, None, None, None], random_signs((n, c, 1, 1), gen, x.device), signs)
        out = x_best.clone()
        put_window(out, index, ctx.clip(x_win + ctx.eps * signs))
        return out

    # -------------------------------------------------------------------- L2
    @staticmethod
    def _init_l2(ctx: AttackContext, x: torch.Tensor) -> torch.Tensor:
        """A grid of bumps (5 x 5 on a square image), random sign per (sample, channel), scaled to norm eps."""
        n, c, h, w = x.shape
        assert ctx.eps is not None
        side = max(min(h, w) // 5, 1)
        th, tw = (side, side) if min(h, w) > 1 else (max(h // 5, 1), max(w // 5, 1))
        delta = torch.zeros_like(x)
        top, left = (h - th * (h // th)) // 2, (w - tw * (w // tw)) // 2
        for vh in range(top, h - th + 1, th):
            for vw in range(left, w - tw + 1, tw):
                eta = bumps((th, tw), 1, ctx.generator, x.device)
                delta[:, :, vh : vh + th, vw : vw + tw] += eta * random_signs((n, c, 1, 1), ctx.generator, x.device)
        return ctx.clip(x + ctx.eps * _unit(delta))

    @staticmethod
    def _propose_l2(ctx: AttackContext, x: torch.Tensor, x_best: torch.Tensor, p: float) -> torch.Tensor:
        """Move the mass of a random window 2 into a random window 1 and add a new bump there (paper, Alg. 3)."""
        n, c, h, w = x.shape
        assert ctx.eps is not None
        gen = ctx.generator
        size = window_shape(p, h, w, odd=True)
        corner1 = random_windows(n, size, h, w, gen, x.device)
        corner2 = random_windows(n, size, h, w, gen, x.device)
        mask1, mask2 = window_mask(corner1, size, h, w), window_mask(corner2, size, h, w)
        index1 = window_index(corner1, size)

        delta = x_best - x
        old = get_window(delta, index1)
        norm_image = delta.flatten(1).norm(dim=1).view(n, 1, 1, 1)
        norm_windows = (delta * (mask1 | mask2)).norm(dim=(2, 3), keepdim=True)  # per channel
        budget = ((ctx.eps**2 - norm_image**2).clamp_min(0.0) / c + norm_windows**2).sqrt()

        new = bumps(size, n, gen, x.device)[:, None] * random_signs((n, c, 1, 1), gen, x.device)
        new = new + old / (old.norm(dim=(2, 3), keepdim=True) + 1e-12)
        new = new / new.norm(dim=(2, 3), keepdim=True).clamp_min(1e-12) * budget

        delta = delta.masked_fill(mask2, 0.0)
        put_window(delta, index1, new)
        return ctx.clip(x + ctx.eps * _unit(delta))


def _unit(delta: torch.Tensor) -> torch.Tensor:
    """Scale every sample of ``delta`` to unit L2 norm."""
    return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (delta.dim() - 1)))
