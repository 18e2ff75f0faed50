"""advaudit.harden: inner maximisation, the training loop, the closed-form logistic check, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advaudit.harden.inner import fgsm_rs_examples, pgd_examples, trades_examples
from advaudit.harden.train import adversarial_train, eps_at
from advaudit_testing.linear import (
    LogisticTwoClass,
    robust_logistic_loss,
    train_logistic_closed_form,
)

from .conftest import rng_images, small_cnn


def _gaussian_binary(n: int = 400, p: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes (the optimum of the robust loss is finite)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    mu = rng.normal(0, 1, p).astype(np.float32)
    x = rng.normal(0, 1.0, (n, p)).astype(np.float32) + np.where(y[:, None] == 1, mu, -mu) * 0.5
    return x.astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_pgd_training_matches_closed_form_logistic(eps: float) -> None:
    """Lecture notes: for logistic regression the inner max is Psi(y(theta^T x + theta_0) - eps||theta||_1);
    PGD adversarial training must reach the same solution as training on that closed form."""
    x, y = _gaussian_binary()
    theta_cf, b_cf, hist = train_logistic_closed_form(x, y, eps, epochs=400, lr=0.05)
    assert hist[-1] < hist[0]
    net = LogisticTwoClass(x.shape[1])
    res = adversarial_train(net, x, y, eps, "pgd", epochs=400, steps=3, step_size=eps, lr=0.05, batch_size=len(x),
                            bounds=(-1e6, 1e6), schedule="constant", ramp=0.0, seed=0)
    theta_pgd, b_pgd = res.module.parameters_flat()
    cos = float(theta_cf @ theta_pgd / (np.linalg.norm(theta_cf) * np.linalg.norm(theta_pgd)))
    assert cos > 0.99
    assert np.linalg.norm(theta_pgd - theta_cf) < 0.05 * np.linalg.norm(theta_cf)
    assert abs(b_pgd - b_cf) < 0.05
    xt, ypm = torch.from_numpy(x), torch.from_numpy(y).float() * 2 - 1
    loss_cf = float(robust_logistic_loss(torch.from_numpy(theta_cf), torch.tensor(b_cf), xt, ypm, eps))
    loss_pgd = float(robust_logistic_loss(torch.from_numpy(theta_pgd), torch.tensor(b_pgd), xt, ypm, eps))
    assert abs(loss_pgd - loss_cf) < 1e-3 * max(1.0, loss_cf)
    # The robust solution differs from plain training: eps shrinks ||theta||_1.
    theta_0, _, _ = train_logistic_closed_form(x, y, 0.0, epochs=400, lr=0.05)
    assert np.abs(theta_cf).sum() < np.abs(theta_0).sum()


def test_pgd_inner_max_is_the_closed_form_worst_case() -> None:
    """On a linear model PGD finds delta* = -y eps sign(theta) exactly (Danskin's maximiser)."""
    torch.manual_seed(0)
    net = LogisticTwoClass(6)
    torch.nn.init.normal_(net.linear.weight)
    x = torch.randn(32, 6)
    y = torch.randint(0, 2, (32,))
    gen = torch.Generator().manual_seed(0)
    xa = pgd_examples(net, x, y, 0.2, 10, 0.05, (-10.0, 10.0), gen)
    want = x - (y.float() * 2 - 1)[:, None] * 0.2 * net.linear.weight.detach().sign()
    assert torch.allclose(xa, want, atol=1e-5)


def test_inner_examples_stay_in_ball_and_bounds() -> None:
    net = small_cnn()
    x = torch.from_numpy(rng_images(16, (1, 28, 28)))
    y = torch.arange(16) % 10
    gen = torch.Generator().manual_seed(0)
    for xa in (pgd_examples(net, x, y, 0.1, 3, 0.05, (0.0, 1.0), gen),
               fgsm_rs_examples(net, x, y, 0.1, 0.125, (0.0, 1.0), gen),
               trades_examples(net, x, 0.1, 3, 0.05, (0.0, 1.0), gen)):
        assert float((xa - x).abs().max()) <= 0.1 + 1e-6
        assert float(xa.min()) >= 0 and float(xa.max()) <= 1
        assert float((xa - x).abs().max()) > 0.05  # it moved


def test_eps_ramp() -> None:
    assert eps_at(0, 100, 0.3, 0.0) == 0.3
    assert eps_at(9, 100, 0.3, 0.5) == pytest.approx(0.06)
    assert eps_at(80, 100, 0.3, 0.5) == 0.3


def _separable_images(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 1x8x8 images with a robust feature (4 pixels at 0.9 vs 0.1, right for 90% of
    the images) and a non-robust one (all other pixels shifted by +-0.06, right for every image).
    Plain training leans on the non-robust feature, which an eps = 0.2 attack flips."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.where(y == 1, 1.0, -1.0)
    x = rng.uniform(0.3, 0.7, (n, 1, 8, 8)) + 0.06 * s[:, None, None, None]
    robust = np.where(rng.random(n) < 0.9, s, -s)
    x[:, 0, 0, :4] = 0.5 + 0.4 * robust[:, None]
    return x.astype(np.float32), y.astype(np.int64)


def _tiny_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def _pgd_accuracy(net: torch.nn.Module, x: np.ndarray, y: np.ndarray, eps: float) -> float:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xa = pgd_examples(net, xt, yt, eps, 20, eps / 8, (0.0, 1.0), torch.Generator().manual_seed(1))
    with torch.no_grad():
        return float((net(xa).argmax(1) == yt).float().mean())


@pytest.mark.parametrize("method", ["pgd", "fgsm-rs", "trades"])
def test_adversarial_training_raises_robust_accuracy(method: str) -> None:
    x, y = _separable_images()
    eps = 0.2
    plain = adversarial_train(_tiny_net(), x, y, 0.0, "pgd", epochs=15, lr=0.03, batch_size=64, ramp=0.0)
    robust = adversarial_train(_tiny_net(), x, y, eps, method, epochs=15, lr=0.03, batch_size=64, steps=5)
    xv, yv = _separable_images(200, seed=1)
    before, after = _pgd_accuracy(plain.module, xv, yv, eps), _pgd_accuracy(robust.module, xv, yv, eps)
    assert before < 0.5 and after >= 0.8
    assert len(robust.history) == 15 and robust.history[-1].eps == pytest.approx(eps)


def test_training_is_seeded_and_leaves_input_untouched() -> None:
    x, y = _separable_images(128)
    net = _tiny_net()
    before = [p.detach().clone() for p in net.parameters()]
    a = adversarial_train(net, x, y, 0.2, "pgd", epochs=2, steps=3, batch_size=32, seed=5)
    b = adversarial_train(net, x, y, 0.2, "pgd", epochs=2, steps=3, batch_size=32, seed=5)
    c = adversarial_train(net, x, y, 0.2, "pgd", epochs=2, steps=3, batch_size=32, seed=6)
    for p0, p in zip(before, net.parameters()):
        assert torch.equal(p0, p)
    pa, pb, pc = (torch.cat([p.reshape(-1) for p in r.module.parameters()]) for r in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_bf16_training_hardens_with_float32_weights() -> None:
    x, y = _separable_images()
    eps = 0.2
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), _tiny_net_head())
    robust = adversarial_train(net, x, y, eps, "pgd", epochs=15, lr=0.03, batch_size=64, steps=5, precision="bf16")
    assert robust.config["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in robust.module.parameters())
    assert robust.module[0].weight.is_contiguous()  # channels-last undone before export
    xv, yv = _separable_images(200, seed=1)
    assert _pgd_accuracy(robust.module, xv, yv, eps) >= 0.8
    assert adversarial_train(_tiny_net(), x, y, eps, "pgd", epochs=1, steps=1).config["precision"] == "fp32"


def _tiny_net_head() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def test_random_shift_translates_each_image_within_the_bound() -> None:
    from advaudit.harden.train import random_shift

    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # one bright pixel in the middle
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    pos = out[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 9 - 4, pos % 9 - 4
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 10  # offsets differ per image
    assert torch.equal(out, random_shift(x, 2, torch.Generator().manual_seed(0)))  # seeded
    assert random_shift(x, 0, torch.Generator()) is x
