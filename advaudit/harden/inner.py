"""Inner maximisation: adversarial examples for training (pure, batched functions).

Every function takes ``forward`` (canonical inputs -> logits), a batch ``x`` in the model's natural
value range ``bounds`` and labels ``y``, and returns a perturbed batch inside the L-inf ball of
radius ``eps`` around ``x`` and inside ``bounds``.  The returned tensor is detached: by Danskin's
theorem the outer gradient is the loss gradient evaluated at the (approximate) maximiser, so no
gradient flows through the attack.

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

Forward = Callable[[torch.Tensor], torch.Tensor]


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, bounds: tuple[float, float]) -> torch.Tensor:
    """Clip ``x_adv`` into the L-inf ball of radius ``eps`` around ``x`` and into ``bounds``."""
    x_adv = torch.max(torch.min(x_adv, x + eps), x - eps)
    return x_adv.clamp(bounds[0], bounds[1])


def uniform_start(x: torch.Tensor, eps: float, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) * 2 - 1
    return project(x + eps * noise, x, eps, bounds)


def _input_grad(loss: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


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
    x_adv = uniform_start(x, eps, bounds, generator) if random_start else x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(forward(x_adv), y, reduction="sum")
        grad = _input_grad(loss, x_adv)
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps, bounds)
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
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    x_adv = project(x + 0.001 * noise, x, eps, bounds)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(forward(x_adv), dim=1), p_clean, reduction="sum")
        grad = _input_grad(loss, x_adv)
        x_adv = project(x_adv.detach() + step_size * grad.sign(), x, eps, bounds)
    return x_adv.detach()
