"""Gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019 "On evaluating adversarial
robustness"): signs that white-box attacks are failing for reasons other than robustness.
They are reported as warnings, never silently."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..models import Model

if TYPE_CHECKING:
    from .runner import AttackRun

GRAD_PROBE = 64


def masking_warnings(model: Model, run: AttackRun, batch_size: int = 256) -> list[str]:
    """Warnings about the model and the attack results in ``run``."""
    out: list[str] = []
    x, y = run.x[:GRAD_PROBE], run.y[:GRAD_PROBE]
    if model.output_kind == "probabilities":
        out.append(
            "the model outputs probabilities, not logits: softmax saturation can hide gradients; "
            "attacks use log-probabilities, but prefer exporting the logits"
        )
    again = model.predict(x, batch_size=batch_size)
    if not np.array_equal(again.labels, run.clean_labels[:GRAD_PROBE]) or not np.allclose(
        again.probs, run.clean_probs[:GRAD_PROBE], atol=1e-5
    ):
        out.append("outputs differ between two identical forward passes: the model is randomised; "
                   "use EOT-style attacks")
    if model.has_gradients and len(x):
        xt = torch.from_numpy(x).to(model.device).requires_grad_(True)
        loss = F.cross_entropy(model.logits(xt), torch.from_numpy(y).to(model.device), reduction="sum")
        (grad,) = torch.autograd.grad(loss, xt)
        flat = grad.flatten(1)
        if not torch.isfinite(flat).all():
            out.append("gradients contain NaN or inf: white-box results are unreliable")
        zero = int((flat.abs().amax(dim=1) == 0).sum())
        if zero:
            out.append(f"{zero} of {len(x)} probed inputs have exactly zero loss gradient (gradient masking?)")
    for row in run.rows:
        if row.uses_gradients and not row.minimum_norm and row.attacked and row.loss_adv is not None:
            if row.loss_clean is not None and row.loss_adv <= row.loss_clean:
                out.append(f"{row.attack} at eps {row.eps:g} did not increase the loss (gradient masking?)")
        if row.rejected:
            out.append(
                f"{row.attack} at eps {row.eps:g}: {row.rejected} candidates fooled the differentiable twin "
                "but not the deployment runtime (not counted)"
            )
    for e in run.eps:
        rows = [r for r in run.rows if r.eps == e]
        white = [r for r in rows if r.uses_gradients]
        black = [r for r in rows if not r.uses_gradients]
        if not white or not black:
            continue
        if rows[0].cascade:
            found = sum(r.verified for r in black)
            if found:
                out.append(
                    f"at eps {e:g} black-box attacks fooled {found} samples the white-box attacks missed (gradient "
                    "masking?)"
                )
        elif min(r.robust_accuracy for r in black) < min(r.robust_accuracy for r in white):
            out.append(f"at eps {e:g} a black-box attack beats every white-box attack (gradient masking?)")
    return out
