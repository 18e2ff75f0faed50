"""Inner maximisation: adversarial examples for training (pure, batched functions).

Every function takes ``forward`` (canonical inputs -> logits), a batch ``x`` in the model's natural
value range ``bounds`` and labels ``y``, and returns a perturbed batch inside the L-inf ball of
radius ``eps`` around ``x`` and inside ``bounds``.  The returned tensor is detached: by Danskin's
theorem the outer gradient is the loss gradient evaluated at the (approximate) maximiser, so no
gradient flows through the attack.

All three run the attacks' own PGD iteration (:func:`advaudit.attacks.pgd.pgd_iterate`, without
early stopping) and projection (:func:`advaudit.attacks.geometry.project`), so training and
evaluation attack through the same points; the random starts are drawn on the CPU generator and then
moved to ``x``'s device.

* :func:`pgd_examples`: Madry et al. 2018, projected gradient ascent on the cross-entropy from a
  uniform random start.
* :func:`fgsm_rs_examples`: Wong, Rice & Kolter 2020 ("Fast is better than free"), one signed
  gradient step of size ``alpha`` (1.25 eps by default) from a uniform random start, projected.
* :func:`trades_examples`: Zhang et al. 2019, PGD on KL(f(x) || f(x')) from a small Gaussian start.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..attacks.base import rand_normal
from ..attacks.geometry import project
from ..attacks.pgd import ball_start, ce_loss, pgd_iterate

Forward = Callable[[torch.Tensor], torch.Tensor]


def pgd_examples(
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float,
    bounds: tuple[float, float],
    generator: torch.Generator,
    random_start: bool = True,
) -> torch.Tensor:
    """Madry PGD: ``steps`` signed-gradient ascent steps on the cross-entropy, projected each step."""
    x = x.detach()
    if eps <= 0:
        return x.clone()
    start = ball_start(x, norm="linf", eps=eps, bounds=bounds, generator=generator) if random_start else x.clone()
    x_adv, _ = pgd_iterate(
        lambda _index, z: forward(z), x, y, None,
        start=start, steps=steps, step_size=step_size, norm="linf", eps=eps, bounds=bounds, loss_fn=ce_loss,
    )
    return x_adv.detach()


def fgsm_rs_examples(
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    bounds: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Wong et al. 2020: uniform start in the eps-ball, one FGSM step of size ``alpha``, project."""
    return pgd_examples(forward, x, y, eps, 1, alpha, bounds, generator, random_start=True)


def _kl_to(logits: torch.Tensor, p_clean: torch.Tensor, _target: torch.Tensor | None) -> torch.Tensor:
    """Per-sample KL(p_clean || softmax(logits)), the TRADES inner loss."""
    return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="none").flatten(1).sum(dim=1)


def trades_examples(
    forward: Forward,
    x: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float,
    bounds: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """TRADES inner maximisation: PGD on KL(p(x) || p(x')) from x + 0.001 N(0, I) (Zhang et al. 2019)."""
    x = x.detach()
    if eps <= 0:
        return x.clone()
    with torch.no_grad():
        p_clean = F.softmax(forward(x), dim=1)
    start = project(x + 0.001 * rand_normal(x.shape, generator, x.device), x, norm="linf", eps=eps, bounds=bounds)
    x_adv, _ = pgd_iterate(
        lambda _index, z: forward(z), x, p_clean, None,
        start=start, steps=steps, step_size=step_size, norm="linf", eps=eps, bounds=bounds, loss_fn=_kl_to,
    )
    return x_adv.detach()
