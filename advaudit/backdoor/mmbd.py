"""MM-BD: data-free backdoor detection with a maximum-margin statistic per class.

Wang, Xiang, Miller, Kesidis, "MM-BD: Post-Training Detection of Backdoor Attacks with Arbitrary
Backdoor Pattern Types Using a Maximum Margin Statistic", IEEE S&P 2024,
https://arxiv.org/abs/2205.06900 (reference code: wanghangpsu/MM-BD).
Threat model: white-box access to the weights (gradients); no clean data needed.

Why this second scanner.  Neural Cleanse assumes a backdoor makes the target label reachable with
an abnormally *small* mask.  The concealed attacks of paper 003 (an NC-reconstructed trigger, or a
scattered random z-pixel trigger, both trained with noise augmentation on random subsets of the
mask) defeat exactly that assumption: they teach the network that partial triggers do nothing, so
the smallest mask NC finds for the target is no smaller than for other labels.  MM-BD makes no
assumption about the trigger's shape, size or how it is embedded.  It uses the observation that
training on poisoned data makes the network map the trigger to the target class with an abnormally
large margin: for each class ``k`` it maximises, over the whole input domain,

    r_k = max_x  z_k(x) - max_{j != k} z_j(x)

(logit margin, gradient ascent from random starts, projected onto the value range).  A backdoored
model has one ``r_k`` far above the others.  The null distribution is a Gamma fitted (maximum
likelihood) to the K-1 statistics other than the largest, and the largest is tested as the maximum
of K draws: ``p = 1 - F(r_max)^K``; the model is flagged when ``p < 0.05`` and the suspected target
is ``argmax r_k``.  That null is ``null="gamma"`` here; the default ``null="logt"`` is a corrected
one (:func:`max_margin_pvalue_logt`): on our clean MNIST models the Gamma fit gave p = 0.005 to a
clean model, and on GTSRB (43 classes) it gave p 0.16-0.50 to BadNets models.  The search is
batched: all classes and restarts form one (K x R) batch.

Departures from the reference code: the three-parameter Gamma fit (scipy's ``gamma.fit``, not a
dependency here) is a profile likelihood over a log grid of locations below the smallest statistic
(:func:`fit_gamma`); the optimiser is Adam on the input with projection, ``restarts`` random starts
per class (the best margin over restarts and steps is the statistic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UsageError
from .base import BackdoorScanner, ScanContext, ScanResult, one_target_result
from .mad import extreme_p_values, loo_scores
from .reference import scanner_reference, scanner_test


@dataclass
class GammaFit:
    shape: float
    scale: float
    loc: float

    def cdf(self, v: float) -> float:
        z = max(0.0, (v - self.loc) / self.scale)
        return float(torch.special.gammainc(torch.tensor(self.shape, dtype=torch.float64),
                                            torch.tensor(z, dtype=torch.float64)))


def _shape_scale(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gamma MLE of (shape, scale) for each row of positive ``u`` (R, n), Newton on the shape."""
    mean = u.mean(dim=1)
    s = (mean.log() - u.log().mean(dim=1)).clamp_min(1e-12)
    a = (3 - s + ((s - 3) ** 2 + 24 * s).sqrt()) / (12 * s)  # Minka's start
    for _ in range(60):
        f = a.log() - torch.special.digamma(a) - s
        df = 1 / a - torch.special.polygamma(1, a)
        a_new = a - f / df
        a = torch.where(a_new > 0, a_new, a / 2)
    return a, mean / a


def fit_gamma(values: np.ndarray, loc: float | None = None) -> GammaFit:
    """Maximum-likelihood Gamma fit.  With ``loc`` given, a two-parameter fit of ``values - loc``;
    without, the location is fitted too (as the reference code's ``scipy.stats.gamma.fit``) by profile
    likelihood over locations ``min - t * spread`` for t in [0.01, 1000] (log grid; locations closer to
    the smallest value make the likelihood unbounded for shapes below 1)."""
    v = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if loc is not None:
        a, sc = _shape_scale((v - loc)[None])
        return GammaFit(float(a[0]), float(sc[0]), float(loc))
    spread = float(v.max() - v.min())
    if spread <= 0:
        return GammaFit(1e8, max(abs(float(v[0])), 1.0) / 1e8, float(v[0]) - max(abs(float(v[0])), 1.0))
    locs = float(v.min()) - spread * torch.logspace(-2, 3, 300, dtype=torch.float64)
    u = v[None] - locs[:, None]
    a, sc = _shape_scale(u)
    ll = ((a[:, None] - 1) * u.log() - u / sc[:, None]).sum(dim=1) - len(v) * (a * sc.log() + torch.lgamma(a))
    i = int(torch.argmax(torch.nan_to_num(ll, nan=-math.inf)))
    return GammaFit(float(a[i]), float(sc[i]), float(locs[i]))


def max_margin_pvalue_logt(stats: np.ndarray) -> tuple[int, float, float]:
    """The corrected null (default): (index of the largest statistic, its p-value, its score).

    The score is how far the largest log margin lies above the mean of the other K-1, in predictive
    standard deviations (:func:`~advaudit.backdoor.mad.loo_scores`); its p-value is the chance that the
    largest such score among K i.i.d. normal log margins is at least as large, simulated once per K
    (:func:`~advaudit.backdoor.mad.extreme_p_values`).  Unlike the Gamma fit to K-1 values, whose
    three parameters can bend the tail around one large clean margin (and bend it the other way on
    another model), this null has two parameters and an exact finite-sample distribution under
    log-normal margins.  Margins at or below 0 (possible on nearly constant models) are tested on
    the raw scale."""
    r = np.asarray(stats, dtype=np.float64)
    values = np.log(r) if r.min() > 0 else r
    scores = loo_scores(values, np.ones(len(r), bool))
    top = int(np.argmax(r))
    return top, float(extreme_p_values(scores[top : top + 1], len(r), len(r))[0]), float(scores[top])


def max_margin_pvalue(stats: np.ndarray) -> tuple[int, float, GammaFit]:
    """MM-BD's test: (index of the largest statistic, its order-statistic p-value, the null fit)."""
    r = np.asarray(stats, dtype=np.float64)
    top = int(np.argmax(r))
    null = np.delete(r, top)
    fit = fit_gamma(null)
    p = 1.0 - fit.cdf(float(r[top])) ** len(r)
    return top, float(max(p, 0.0)), fit


def max_margins(
    ctx: ScanContext, *, restarts: int, steps: int, lr: float, batch_limit: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Largest logit margin each class reaches over the input domain: (K,) statistics and the
    (K, C, H, W) inputs that reached them."""
    k, shape = ctx.num_classes, ctx.input_shape
    lo, hi = ctx.lo, ctx.hi
    x = (lo + (hi - lo) * torch.rand((k * restarts, *shape), generator=ctx.generator)).to(ctx.device)
    x.requires_grad_(True)
    cls = torch.arange(k, device=ctx.device).repeat_interleave(restarts)
    opt = torch.optim.Adam([x], lr=lr * (hi - lo))
    best = torch.full((k * restarts,), -math.inf, device=ctx.device)
    best_x = x.detach().clone()
    for step in range(steps + 1):
        z = ctx.logits(x)
        own = z.gather(1, cls[:, None]).squeeze(1)
        other = z.scatter(1, cls[:, None], -math.inf).amax(dim=1)
        margin = own - other
        with torch.no_grad():
            better = margin > best
            best = torch.where(better, margin.detach(), best)
            best_x[better] = x.detach()[better]
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        (-margin.sum()).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(lo, hi)
        if step % 20 == 0:
            ctx.report("mm-bd", step + 1, steps)
    per_class = best.view(k, restarts)
    arg = per_class.argmax(dim=1)
    stats = per_class.max(dim=1).values.cpu().numpy().astype(np.float64)
    xs = best_x.view(k, restarts, *shape)[torch.arange(k), arg].cpu().numpy()
    return stats, xs


class MMBD(BackdoorScanner):
    """MM-BD (Wang et al. 2024): data-free maximum-margin statistic per class, Gamma-null p-value.

    ``null``: ``logt`` (default, :func:`max_margin_pvalue_logt`) or ``gamma`` (the paper's); with
    ``reference`` (one row of K margins per clean reference model) each class's margin is tested
    against the same class's margins instead (:mod:`advaudit.backdoor.reference`)."""

    name = "mm-bd"
    min_per_class = 0
    reference_key = "max_margin"
    reference_side = "high"
    reference_settings = ("restarts", "steps", "lr")

    def __init__(
        self, *, restarts: int = 8, steps: int = 300, lr: float = 0.05, alpha: float = 0.05, null: str = "logt",
        reference: tuple[tuple[float, ...], ...] | None = None,
    ) -> None:
        if null not in ("logt", "gamma"):
            raise UsageError(f"mm-bd: null must be logt or gamma, got {null!r}")
        self.null = null  # with ``reference`` the reference test decides instead (evidence null: reference)
        self._reference = scanner_reference(self.name, reference, self.reference_side)
        self.reference_models = None if self._reference is None else self._reference.models
        if restarts < 1 or steps < 1:
            raise UsageError("mm-bd: restarts and steps must be at least 1")
        if lr <= 0:
            raise UsageError(f"mm-bd: lr must be positive, got {lr}")
        if not 0 < alpha < 1:
            raise UsageError(f"mm-bd: alpha (the p-value threshold) must be in (0, 1), got {alpha}")
        self.restarts = int(restarts)
        self.steps = int(steps)
        self.lr = float(lr)
        self.alpha = float(alpha)

    def run(self, ctx: ScanContext, x: np.ndarray | None, y: np.ndarray | None) -> ScanResult:
        if ctx.num_classes < 3:
            raise UsageError("mm-bd needs at least 3 classes (a null distribution from K-1 >= 2 statistics)")
        stats, _ = max_margins(ctx, restarts=self.restarts, steps=self.steps, lr=self.lr)
        top, p_gamma, fit = max_margin_pvalue(stats)
        _, p_logt, score = max_margin_pvalue_logt(stats)
        p = p_logt if self.null == "logt" else p_gamma
        extra: dict[str, object] = {}
        if self._reference is not None:
            versus = scanner_test(self.name, stats, self._reference, self.alpha)
            top, p = versus.top, versus.p_value
            extra = {"reference": self._reference.describe(), "reference_index": float(versus.index[top])}
        flagged = p < self.alpha
        return one_target_result(
            self.name, flagged, top, "max_margin", stats,
            {
                "top_class": top,
                "top_margin": float(stats[top]),
                "p_value": p,
                "null": "reference" if self._reference is not None else self.null,
                "p_value_gamma": p_gamma,
                "p_value_logt": p_logt,
                "top_score": score,
                "alpha": self.alpha,
                "null_gamma": {"shape": fit.shape, "scale": fit.scale, "loc": fit.loc},
                **extra,
            },
        )
