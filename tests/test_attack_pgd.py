"""PGD on the bundled MNIST CNN: strength, budget, determinism, targeted mode, early stopping, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advaudit.attacks import lp_norm
from advaudit.attacks.fgsm import FGSM
from advaudit.attacks.pgd import PGD
from advaudit.errors import PluginError

N = 48


@pytest.fixture(scope="module")
def batch(mnist_sample):
    model, data = mnist_sample
    return model, torch.from_numpy(data.x[:N]), torch.from_numpy(data.y[:N])


def robust(model, x_adv: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Still correctly classified by the deployment runtime."""
    return model.predict(x_adv).labels == y.numpy()


def test_pgd_beats_or_ties_fgsm(batch):
    model, x, y = batch
    fgsm = FGSM()(model, x, y, eps=0.1, norm="linf").x_adv
    pgd = PGD(steps=10)(model, x, y, eps=0.1, norm="linf", seed=0).x_adv
    acc_fgsm, acc_pgd = robust(model, fgsm, y).mean(), robust(model, pgd, y).mean()
    assert acc_pgd <= acc_fgsm
    assert acc_pgd < robust(model, x, y).mean()


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 2.0)])
def test_within_budget_and_range(batch, norm, eps):
    model, x, y = batch
    out = PGD(steps=5)(model, x, y, eps=eps, norm=norm, seed=1)
    assert out.x_adv.shape == x.shape
    assert float(lp_norm(out.x_adv - x, norm).max()) <= eps + 1e-6
    assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
    assert float(lp_norm(out.x_adv - x, norm).max()) > 0.5 * eps


def test_same_seed_same_result(batch):
    model, x, y = batch
    attack = PGD(steps=5)
    a = attack(model, x, y, eps=0.1, norm="linf", seed=3).x_adv
    b = attack(model, x, y, eps=0.1, norm="linf", seed=3).x_adv
    c = attack(model, x, y, eps=0.1, norm="linf", seed=4).x_adv
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_targeted_reaches_targets(batch):
    model, x, y = batch
    x, y = x[:32], y[:32]
    targets = (y + 1) % 10
    out = PGD(steps=20)(model, x, y, eps=0.3, norm="linf", targets=targets, seed=0)
    hit = model.predict(out.x_adv).labels == targets.numpy()
    assert hit.mean() >= 0.7


def test_early_stopping_spends_queries_only_on_robust_samples(batch):
    model, x, y = batch
    steps = 40
    out = PGD(steps=steps)(model, x, y, eps=0.3, norm="linf", seed=0)
    assert not robust(model, out.x_adv, y).any()
    assert int(out.queries.min()) >= 1 and int(out.queries.max()) <= steps + 1
    assert float(out.queries.float().mean()) < steps / 3


def test_restarts_only_rerun_unfooled_samples(batch):
    model, x, y = batch
    one = PGD(steps=3, restarts=1)(model, x, y, eps=0.1, norm="linf", seed=0)
    two = PGD(steps=3, restarts=2)(model, x, y, eps=0.1, norm="linf", seed=0)
    with torch.no_grad():
        fooled = (model.logits(one.x_adv).argmax(1) != y).numpy()  # the attack's own criterion
    assert fooled.any() and (~fooled).any()
    assert torch.equal(one.x_adv[fooled], two.x_adv[fooled])
    assert torch.equal(one.queries[fooled], two.queries[fooled])
    assert bool((two.queries[~fooled] > one.queries[~fooled]).all())
    assert robust(model, two.x_adv, y).mean() <= robust(model, one.x_adv, y).mean()


def test_progress_reports_steps(batch):
    model, x, y = batch
    done: list[int] = []
    PGD(steps=4, restarts=2)(model, x, y, eps=0.05, norm="linf", seed=0, progress=done.append)
    assert done and set(done) == {1}
    assert 4 <= sum(done) <= 8


def test_default_step_is_madry_rule():
    assert PGD(steps=40).relative_step == pytest.approx(2.5 / 40)
    assert PGD(steps=40, rel_stepsize="0.1").relative_step == pytest.approx(0.1)


@pytest.mark.parametrize(
    "params",
    [{"step": 3}, {"steps": 0}, {"steps": "many"}, {"restarts": 0}, {"rel_stepsize": -0.1}, {"random_start": "maybe"}],
)
def test_bad_parameters_raise_plugin_error(params):
    with pytest.raises(PluginError):
        PGD(**params)
