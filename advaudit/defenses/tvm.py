"""Total variation minimisation after random pixel dropout (Guo et al. 2018, "Countering
adversarial images using input transformations"; CS229 paper 004: dropout 0.5, weight 0.03).

Guo et al. keep each pixel with a Bernoulli draw (mask ``M``) and reconstruct, per image and
channel, the simplest image consistent with the kept pixels::

    z* = argmin_z  || M * (z - x) ||_2  +  weight * TV_p(z)
    TV_p(z) = sum_i || z[i, :] - z[i-1, :] ||_p  +  sum_j || z[:, j] - z[:, j-1] ||_p

(the objective ART's ``TotalVarMin`` minimises image by image with SciPy's L-BFGS-B).  Here the same
convex problem is solved for the whole batch and every channel at once with the first-order
primal-dual method of Chambolle and Pock (2011), whose proximal steps are closed-form for both terms:
a group soft-threshold for the (unsquared) data norm and a projection onto the dual norm balls for
TV.  ``iters`` primal-dual steps; the optimum does not depend on the solver.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from .base import Defense, need

STEP = 0.99 / math.sqrt(8.0)  # tau = sigma, tau * sigma * ||grad||^2 < 1 (||grad||^2 <= 8)


def _grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return z[..., 1:, :] - z[..., :-1, :], z[..., :, 1:] - z[..., :, :-1]


def tv_objective(z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, weight: float, norm: int = 2) -> torch.Tensor:
    """Guo et al.'s objective per (image, channel): shape (N, C)."""
    data = (mask * (z - x)).flatten(2).norm(dim=2)
    dv, dh = _grad(z)
    p = float(norm)
    tv = dv.norm(p=p, dim=-1).sum(-1) + dh.norm(p=p, dim=-2).sum(-1)
    return data + weight * tv


def total_variation(z: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image (sum of absolute neighbour differences), shape (N,)."""
    dv, dh = _grad(z)
    return dv.abs().flatten(1).sum(1) + dh.abs().flatten(1).sum(1)


def tv_reconstruct(x: torch.Tensor, mask: torch.Tensor, weight: float, norm: int = 2, iters: int = 100) -> torch.Tensor:
    """Minimise Guo et al.'s objective for every image and channel of ``x`` (N, C, H, W) at once.

    Chambolle-Pock iterations with in-place buffers (the loop is memory-bound).  ``mask`` (1 = kept)
    broadcasts against ``x``.
    """
    x = x.contiguous()
    z = x.clone()
    if weight <= 0 or x.shape[-1] < 2 or x.shape[-2] < 2:
        return z
    mask = mask.to(x.dtype).expand_as(x)
    tau = sigma = STEP
    zb = x.clone()
    v = torch.empty_like(x)
    r = torch.empty_like(x)
    pv = torch.zeros_like(x[..., 1:, :])
    ph = torch.zeros_like(x[..., :, 1:])
    gv = torch.empty_like(pv)
    gh = torch.empty_like(ph)
    for _ in range(iters):
        # dual step: p <- proj(p + sigma * grad(z_bar)), rows (vertical) / columns (horizontal) as groups
        torch.sub(zb[..., 1:, :], zb[..., :-1, :], out=gv)
        torch.sub(zb[..., :, 1:], zb[..., :, :-1], out=gh)
        pv.add_(gv, alpha=sigma)
        ph.add_(gh, alpha=sigma)
        if norm == 1:
            pv.clamp_(-weight, weight)
            ph.clamp_(-weight, weight)
        else:
            pv.div_(pv.square().sum(dim=-1, keepdim=True).sqrt_().div_(weight).clamp_min_(1.0))
            ph.div_(ph.square().sum(dim=-2, keepdim=True).sqrt_().div_(weight).clamp_min_(1.0))
        # primal step: v = z - tau * grad^T p, then the prox of tau * ||M (z - x)||_2
        v.copy_(z)
        v[..., :-1, :].add_(pv, alpha=tau)
        v[..., 1:, :].sub_(pv, alpha=tau)
        v[..., :, :-1].add_(ph, alpha=tau)
        v[..., :, 1:].sub_(ph, alpha=tau)
        torch.sub(v, x, out=r).mul_(mask)
        shrink = r.square().sum(dim=(-2, -1), keepdim=True).sqrt_().clamp_min_(1e-12)
        shrink = shrink.reciprocal_().mul_(tau).clamp_max_(1.0)
        v.sub_(r.mul_(shrink))
        # over-relaxation: z_bar = 2 v - z; then z <- v
        torch.sub(v, z, out=zb).add_(v)
        z, v = v, z
    return z


class TVM(Defense):
    """Total variation minimisation after Bernoulli pixel dropout (Guo et al. 2018), batched.

    Each pixel (all channels together) is dropped with probability ``drop``; the image is rebuilt by
    minimising ``||M (z - x)||_2 + weight * TV_norm(z)`` per channel (see the module docstring).
    Randomised: the dropout mask is drawn from the seeded generator.  BPDA backward: the identity
    (Athalye et al. 2018 approximate TVM this way).
    """

    drop: float
    weight: float
    norm: int
    iters: int

    name: ClassVar[str] = "tvm"
    randomized: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"drop": 0.5, "weight": 0.03, "norm": 2, "iters": 100}

    def check_params(self) -> None:
        need(0.0 <= self.drop < 1.0, self.name, f"drop must be in [0, 1), got {self.drop}")
        need(self.weight >= 0, self.name, f"weight must be >= 0, got {self.weight}")
        need(self.norm in (1, 2), self.name, f"norm must be 1 or 2, got {self.norm}")
        need(self.iters >= 1, self.name, f"iters must be >= 1, got {self.iters}")

    def draw_mask(self, shape: torch.Size | tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = shape
        return (torch.rand(n, 1, h, w, generator=generator) >= self.drop).float()

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mask = self.draw_mask(x.shape, generator).to(x.device, x.dtype).expand_as(x)
        return tv_reconstruct(x, mask, float(self.weight), int(self.norm), int(self.iters))
