"""APGD-CE and APGD-DLR on the bundled MNIST CNN, and Algorithm 1's schedule and step-size rule."""

from __future__ import annotations

import pytest
import torch

from advaudit.attacks import lp_norm
from advaudit.attacks.apgd import APGDCE, APGDDLR, _checkpoint, _State, checkpoint_fractions, checkpoints
from advaudit.attacks.fgsm import FGSM
from advaudit.errors import PluginError, UsageError
from advaudit.models import load_model

from .conftest import export_onnx, small_cnn

N = 48


@pytest.fixture(scope="module")
def batch(mnist_sample):
    model, data = mnist_sample
    return model, torch.from_numpy(data.x[:N]), torch.from_numpy(data.y[:N])


def test_checkpoint_schedule_matches_paper():
    assert checkpoint_fractions()[:5] == pytest.approx([0.0, 0.22, 0.41, 0.57, 0.70])
    assert checkpoint_fractions() == pytest.approx([0.0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99])
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]


def test_checkpoint_halves_on_condition_1_or_2():
    # rows: (a) few increases -> cond. 1; (b) many increases and improved -> keep; (c) not halved last
    # time and no improvement -> cond. 2; (d) halved last time, no improvement, many increases -> keep.
    n = 4
    x, x_best = torch.zeros(n, 1, 2, 2), torch.ones(n, 1, 2, 2)
    s = _State(
        index=torch.arange(n), x=x, x_prev=x, grad=x, loss=torch.zeros(n), x_best=x_best, grad_best=x_best,
        loss_best=torch.tensor([1.0, 2.0, 1.0, 1.0]), step=torch.full((n,), 0.6),
        increases=torch.tensor([1.0, 9.0, 9.0, 9.0]), loss_best_at_check=torch.tensor([1.0, 1.0, 1.0, 1.0]),
        halved_at_check=torch.tensor([False, False, False, True]),
    )
    _checkpoint(s, rho=0.75, interval=10)
    halved = torch.tensor([True, False, True, False])
    assert torch.equal(s.halved_at_check, halved)
    assert torch.allclose(s.step, torch.tensor([0.3, 0.6, 0.3, 0.6]))
    assert torch.equal(s.x.flatten(1).amax(1) == 1, halved)  # restarted from x_max
    assert torch.equal(s.loss, torch.where(halved, s.loss_best, torch.zeros(n)))
    assert torch.equal(s.loss_best_at_check, s.loss_best)
    assert not s.increases.any()


@pytest.mark.parametrize("cls", [APGDCE, APGDDLR])
def test_success_on_correctly_classified_at_eps_03(batch, cls):
    model, x, y = batch
    correct = model.predict(x).labels == y.numpy()
    out = cls()(model, x, y, eps=0.3, norm="linf", seed=0)
    fooled = model.predict(out.x_adv).labels != y.numpy()
    assert fooled[correct].mean() >= 0.9
    assert float(out.queries.float().mean()) < 20  # early stopping: far fewer than 100 steps each


def test_apgd_ce_beats_or_ties_fgsm_at_eps_01(batch):
    model, x, y = batch
    x, y = x[:32], y[:32]
    fgsm = FGSM()(model, x, y, eps=0.1, norm="linf").x_adv
    apgd = APGDCE(steps=10)(model, x, y, eps=0.1, norm="linf", seed=0).x_adv
    acc = [(model.predict(a).labels == y.numpy()).mean() for a in (fgsm, apgd)]
    assert acc[1] <= acc[0]


@pytest.mark.parametrize("cls", [APGDCE, APGDDLR])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_within_budget_and_range(batch, cls, norm, eps):
    model, x, y = batch
    out = cls(steps=5, n_target_classes=1) if cls is APGDDLR else cls(steps=5)
    x_adv = out(model, x[:16], y[:16], eps=eps, norm=norm, seed=1).x_adv
    assert float(lp_norm(x_adv - x[:16], norm).max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("cls", [APGDCE, APGDDLR])
def test_same_seed_same_result(batch, cls):
    model, x, y = batch
    attack = cls(steps=3, n_target_classes=2) if cls is APGDDLR else cls(steps=3)
    a = attack(model, x[:12], y[:12], eps=0.1, norm="linf", seed=7)
    b = attack(model, x[:12], y[:12], eps=0.1, norm="linf", seed=7)
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.queries, b.queries)


@pytest.mark.parametrize("cls", [APGDCE, APGDDLR])
def test_targeted_mode_reaches_targets(batch, cls):
    model, x, y = batch
    x, y = x[:32], y[:32]
    targets = (y + 3) % 10
    out = cls(steps=20)(model, x, y, eps=0.3, norm="linf", targets=targets, seed=0)
    assert (model.predict(out.x_adv).labels == targets.numpy()).mean() >= 0.7


def test_apgd_dlr_needs_four_classes(tmp_path):
    path = export_onnx(small_cnn(classes=3), tmp_path / "three.onnx", torch.zeros(1, 1, 28, 28))
    model = load_model(path)
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(UsageError):
        APGDDLR(steps=2)(model, x, torch.zeros(2, dtype=torch.long), eps=0.1)


@pytest.mark.parametrize(
    "cls,params",
    [
        (APGDCE, {"n_target_classes": 3}),
        (APGDCE, {"stepsize": 0.1}),
        (APGDCE, {"steps": 0}),
        (APGDCE, {"rho": 0}),
        (APGDCE, {"rho": "1.5"}),
        (APGDDLR, {"restarts": -1}),
        (APGDDLR, {"n_target_classes": 0}),
    ],
)
def test_bad_parameters_raise_plugin_error(cls, params):
    with pytest.raises(PluginError):
        cls(**params)
