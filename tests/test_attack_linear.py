"""Lecture notes (000), "Linear models": for logistic regression the inner maximisation has a closed
form, delta* = -y eps sign(theta), so FGSM is the exact worst case and the adversarial loss is
Psi(y (theta^T x + theta_0) - eps ||theta||_1) with Psi(z) = log(1 + exp(-z))."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advaudit.attacks.base import Attack
from advaudit.attacks.fgsm import FGSM
from advaudit.models import load_model

from .conftest import export_onnx

P = 20
EPS = 0.2


class LogReg(torch.nn.Module):
    """Binary logistic regression as two logits [0, theta^T x + theta_0]: softmax = sigmoid."""

    def __init__(self, theta: torch.Tensor, theta0: float) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(P, 1)
        with torch.no_grad():
            self.lin.weight.copy_(theta[None])
            self.lin.bias.fill_(theta0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.lin(x)
        return torch.cat([torch.zeros_like(z), z], dim=1)


@pytest.fixture(scope="module")
def logreg(tmp_path_factory):
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(P, generator=gen)
    net = LogReg(theta, 0.3).eval()
    path = export_onnx(net, tmp_path_factory.mktemp("logreg") / "logreg.onnx", torch.zeros(2, P))
    # range wide enough that clipping never interferes with the closed form
    model = load_model(path, spec={"range": "-5,5"})
    x = (torch.rand(64, P, generator=gen) * 2 - 1)
    y = torch.randint(0, 2, (64,), generator=gen)
    return model, theta.double(), 0.3, x, y


def psi(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, -z)


def _loss(model, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Cross-entropy from the deployment runtime (ONNX Runtime)."""
    lp = model.predict(x.numpy()).log_probs
    return -lp[np.arange(len(y)), y.numpy()]


def test_fgsm_attains_the_closed_form_worst_case(logreg):
    model, theta, theta0, x, y = logreg
    out = FGSM()(model, x, y, eps=EPS, norm="linf")
    y_pm = (2 * y - 1).double().numpy()
    margin = y_pm * (x.double().numpy() @ theta.numpy() + theta0)
    expected = psi(margin - EPS * theta.abs().sum().item())
    np.testing.assert_allclose(_loss(model, out.x_adv, y), expected, rtol=1e-4, atol=1e-5)
    # and the perturbation is exactly delta* = -y eps sign(theta)
    delta = (out.x_adv - x).double().numpy()
    np.testing.assert_allclose(delta, -y_pm[:, None] * EPS * np.sign(theta.numpy())[None], atol=1e-6)


def test_pgd_cannot_beat_fgsm_on_a_linear_model(logreg):
    model, _, _, x, y = logreg
    from advaudit.attacks import get_attack

    pgd: Attack = get_attack("pgd", steps=50)
    fgsm_loss = _loss(model, FGSM()(model, x, y, eps=EPS, norm="linf").x_adv, y)
    pgd_loss = _loss(model, pgd(model, x, y, eps=EPS, norm="linf", seed=1).x_adv, y)
    # PGD may stop early once a sample is fooled, so it can only be lower, never higher
    assert np.all(pgd_loss <= fgsm_loss + 1e-5)
