"""DeepFool.

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep neural
networks", CVPR 2016, https://arxiv.org/abs/1511.04599 (used in paper 004).

Threat model: minimum-norm, untargeted, L2 or Linf.  The attack ignores eps while searching.  Each
step linearises the classifier around the current point and moves to the closest linearised decision
boundary among the ``candidates`` classes ranked highest on the clean input (Algorithm 2 for L2; the
paper's l_p extension with p = inf, dual norm q = 1, for Linf: step ``|f_k| / ||w_k||_1 * sign(w_k)``).
The steps accumulate in ``r``; the candidate is ``x + (1 + overshoot) * r`` clipped to the value range.
A sample stops as soon as its label changes (by a logit margin of at least ``MARGIN_TOL``, so that the
deployment runtime agrees); samples still classified correctly after ``steps`` steps come back unchanged.

Example::

    out = DeepFool()(model, x, y, eps=None, norm="l2")
    out = DeepFool(candidates=4)(model, x, y, eps=None, norm="linf")
"""

from __future__ import annotations

import torch

from ..errors import PluginError
from .base import Attack, AttackContext
from .cw import MARGIN_TOL, cw_margin

STEP_PAD = 1e-4
"""Added to each step's distance so the linearised boundary is crossed, not just reached (as in the paper's code)."""


def candidate_classes(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, k)`` class indices: the label first, then the ``k - 1`` other classes with the highest logits."""
    others = logits.scatter(1, y[:, None], float("-inf")).topk(k - 1, dim=1).indices
    return torch.cat([y[:, None], others], dim=1)


def class_gradients(x: torch.Tensor, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``(N, k, *x.shape[1:])`` gradients of the logits of ``classes`` (one backward pass per column)."""
    picked = logits.gather(1, classes)
    grads = [
        torch.autograd.grad(picked[:, j].sum(), x, retain_graph=j < classes.shape[1] - 1)[0]
        for j in range(classes.shape[1])
    ]
    return torch.stack(grads, dim=1)


def deepfool_step(logits: torch.Tensor, grads: torch.Tensor, classes: torch.Tensor, norm: str) -> torch.Tensor:
    """The step to the closest linearised boundary between ``classes[:, 0]`` and the other candidates."""
    picked = logits.gather(1, classes)
    f = (picked[:, 1:] - picked[:, :1]).abs()  # (N, k-1)
    w = (grads[:, 1:] - grads[:, :1]).flatten(2)  # (N, k-1, D)
    dual = 2.0 if norm == "l2" else 1.0
    w_norm = w.norm(p=dual, dim=2).clamp_min(1e-12)
    closest = (f / w_norm).argmin(dim=1)
    rows = torch.arange(len(f), device=f.device)
    w_k, f_k, n_k = w[rows, closest], f[rows, closest], w_norm[rows, closest]
    if norm == "l2":
        step = ((f_k + STEP_PAD) / n_k**2)[:, None] * w_k
    else:
        step = ((f_k + STEP_PAD) / n_k)[:, None] * w_k.sign()
    return step.view(len(f), *grads.shape[2:])


class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al. 2016): minimum-norm steps to the closest linearised boundary."""

    steps: int
    overshoot: float
    candidates: int

    name = "deepfool"
    norms = ("l2", "linf")
    minimum_norm = True
    supports_targeted = False
    defaults = {"steps": 50, "overshoot": 0.02, "candidates": 10}

    def check_params(self) -> None:
        if self.steps < 1:
            raise PluginError(f"attack 'deepfool': steps must be >= 1, got {self.steps}")
        if not self.overshoot >= 0:
            raise PluginError(f"attack 'deepfool': overshoot must be >= 0, got {self.overshoot}")
        if self.candidates < 2:
            raise PluginError(f"attack 'deepfool': candidates must be >= 2, got {self.candidates}")

    def run(self, ctx: AttackContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert ctx.queries is not None
        with torch.no_grad():
            logits = ctx.logits(x)
        ctx.queries += 1
        classes = candidate_classes(logits, y, min(self.candidates, logits.shape[1]))
        r_total = torch.zeros_like(x)
        x_adv = x.clone()
        index = (logits.argmax(dim=1) == y).nonzero().squeeze(1)
        for _ in range(self.steps):
            if len(index) == 0:
                break
            x_req = x_adv[index].requires_grad_(True)
            out = ctx.logits(x_req)
            ctx.queries[index] += 1
            grads = class_gradients(x_req, out, classes[index])
            still = cw_margin(out, y[index], targeted=False) > -MARGIN_TOL
            index, out, grads = index[still], out[still].detach(), grads[still]
            r_total[index] += deepfool_step(out, grads, classes[index], ctx.norm)
            x_adv[index] = ctx.clip(x[index] + (1 + self.overshoot) * r_total[index])
            if ctx.progress is not None:
                ctx.progress(1)
        if len(index):
            with torch.no_grad():
                failed = cw_margin(ctx.logits(x_adv[index]), y[index], targeted=False) > -MARGIN_TOL
            ctx.queries[index] += 1
            x_adv[index[failed]] = x[index[failed]]
        return x_adv
