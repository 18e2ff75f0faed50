"""Adversarial training of binary logistic regression with the exact (closed-form) inner maximum.

For f(x) = theta^T x + theta_0, labels y in {-1, +1}, the logistic loss Psi(z) = log(1 + exp(-z)) and
the L-inf ball of radius eps (no box constraint), the worst case is delta* = -y eps sign(theta), so

    max_{||delta||_inf <= eps} Psi(y (theta^T (x + delta) + theta_0)) = Psi(y (theta^T x + theta_0) - eps ||theta||_1)

(the lecture notes, ``../shared/papers/000_*``).  Adversarial training is then the convex problem

    min_{theta, theta_0} 1/N sum_i Psi(y_i (theta^T x_i + theta_0) - eps ||theta||_1),

which :func:`train_logistic_closed_form` solves by full-batch gradient descent.  It is the reference
that PGD-based adversarial training (:func:`advaudit.harden.train.adversarial_train` on
:class:`LogisticTwoClass`) must reach: for a linear model one signed step of size >= 2 eps lands on the
exact maximiser, so both minimise the same objective.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def psi(z: torch.Tensor) -> torch.Tensor:
    """The logistic loss Psi(z) = log(1 + exp(-z)), computed stably."""
    return F.softplus(-z)


def robust_logistic_loss(theta: torch.Tensor, theta0: torch.Tensor, x: torch.Tensor, y_pm: torch.Tensor,
                         eps: float) -> torch.Tensor:
    """Mean of Psi(y (theta^T x + theta_0) - eps ||theta||_1), labels ``y_pm`` in {-1, +1}."""
    margin = y_pm * (x.reshape(len(x), -1) @ theta + theta0)
    return psi(margin - eps * theta.abs().sum()).mean()


class LogisticTwoClass(nn.Module):
    """Binary logistic regression as a 2-logit classifier: logits (0, theta^T x + theta_0).

    Cross-entropy on these logits with class 1 <-> y = +1 and class 0 <-> y = -1 is exactly
    Psi(y (theta^T x + theta_0)), so the general trainer optimises the lecture notes' loss.
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x.reshape(x.shape[0], -1))
        return torch.cat([torch.zeros_like(z), z], dim=1)

    def parameters_flat(self) -> tuple[np.ndarray, float]:
        return self.linear.weight.detach().reshape(-1).numpy().copy(), float(self.linear.bias.detach())


def train_logistic_closed_form(
    x: np.ndarray,
    y01: np.ndarray,
    eps: float,
    *,
    epochs: int = 300,
    lr: float = 0.05,
    optimizer: str = "adam",
) -> tuple[np.ndarray, float, list[float]]:
    """Adversarially train logistic regression with the closed-form inner maximum (full batch).

    ``y01`` are class indices 0/1 (mapped to y = -1/+1).  Returns (theta, theta_0, loss per epoch).
    Deterministic: zero initialisation, full-batch steps.
    """
    xt = torch.as_tensor(x, dtype=torch.float32).reshape(len(x), -1)
    y_pm = torch.as_tensor(y01, dtype=torch.float32) * 2 - 1
    theta = torch.zeros(xt.shape[1], requires_grad=True)
    theta0 = torch.zeros((), requires_grad=True)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam([theta, theta0], lr=lr)
    else:
        opt = torch.optim.SGD([theta, theta0], lr=lr)
    history = []
    for _ in range(epochs):
        opt.zero_grad()
        loss = robust_logistic_loss(theta, theta0, xt, y_pm, eps)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return theta.detach().numpy().copy(), float(theta0.detach()), history
