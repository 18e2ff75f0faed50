"""Fast Gradient (Sign) Method.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
https://arxiv.org/abs/1412.6572 (lecture notes 000, section "FGSM").

Threat model: one gradient step of size eps; Linf (sign of the gradient) or L2 (normalised gradient).
Untargeted: ascend the cross-entropy of the true label.  Targeted: descend the cross-entropy of the
target label.

Example::

    out = FGSM()(model, x, y, eps=0.3, norm="linf")
"""

from __future__ import annotations

import torch

from .base import Attack, AttackContext
from .losses import cross_entropy


def gradient_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Unit-size ascent direction: the sign for Linf, the L2-normalised gradient for L2."""
    if norm == "linf":
        return grad.sign()
    flat = grad.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    return grad / flat.view(-1, *([1] * (grad.dim() - 1)))


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one gradient step of size eps."""

    name = "fgsm"
    defaults = {}

    def run(self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_req = x.clone().requires_grad_(True)
        logits = ctx.logits(x_req)
        if ctx.targeted:
            assert ctx.targets is not None
            loss = -cross_entropy(logits, ctx.targets)
        else:
            loss = cross_entropy(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x_req)
        assert ctx.queries is not None and ctx.eps is not None
        ctx.queries += 1
        return x + ctx.eps * gradient_step(grad, ctx.norm)
