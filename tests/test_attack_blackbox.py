"""Black-box attacks (Square, Substitute): they query only the deployment runtime's scores, so they run
on models without gradients, count their queries per sample, and are deterministic by seed."""

from __future__ import annotations

import pytest
import torch

from advaudit.attacks.fgsm import FGSM
from advaudit.attacks.square import Square, p_schedule, window_shape
from advaudit.attacks.substitute import Substitute
from advaudit.errors import PluginError, UsageError
from advaudit.models import load_model

from .conftest import SAMPLE_MODELS, export_onnx

EPS_LINF = 0.3
EPS_L2 = 3.0


@pytest.fixture(scope="module")
def batch(mnist_sample):
    """The first 32 correctly classified bundled MNIST images."""
    model, data = mnist_sample
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    correct = torch.from_numpy(model.predict(x).labels) == y
    return x[correct][:32], y[correct][:32]


@pytest.fixture(scope="module")
def no_grad_model():
    """The MNIST sample loaded without its differentiable twin: ONNX Runtime only."""
    model = load_model(SAMPLE_MODELS / "mnist_cnn.onnx", check_gradients=False)
    assert not model.has_gradients
    return model


def success(model, x_adv: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    pred = torch.from_numpy(model.predict(x_adv).labels)
    return pred == targets if targets is not None else pred != y


def check_budget(model, x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float) -> None:
    lo, hi = model.spec.range
    assert x_adv.min() >= lo and x_adv.max() <= hi
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()


# ---------------------------------------------------------------------------- Square
def test_p_schedule_halves_at_the_papers_iterations_rescaled_to_the_budget():
    assert p_schedule(0.8, 0, 10_000) == 0.8
    assert p_schedule(0.8, 10, 10_000) == 0.8
    assert p_schedule(0.8, 11, 10_000) == 0.4
    assert p_schedule(0.8, 201, 10_000) == 0.1
    assert p_schedule(0.8, 9_999, 10_000) == 0.8 / 512
    assert p_schedule(0.8, 100, 1_000) == 0.8 / 16  # iteration 100 of 1000 = iteration 1000 of 10000
    assert p_schedule(0.8, 101, 1_000) == 0.8 / 32


def test_window_shapes():
    assert window_shape(0.8, 28, 28) == (25, 25)
    assert window_shape(0.8 / 512, 28, 28) == (1, 1)
    assert window_shape(0.8 / 512, 28, 28, odd=True) == (3, 3)
    assert window_shape(0.1, 1, 200) == (1, 20)  # flat inputs: a segment with a fraction p of the features


def test_square_linf_succeeds_within_budget_and_stops_early(mnist_sample, batch):
    model, _ = mnist_sample
    x, y = batch
    out = Square(queries=1000)(model, x, y, eps=EPS_LINF, norm="linf", seed=0)
    ok = success(model, out.x_adv, y)
    assert ok.float().mean() >= 0.8
    check_budget(model, x, out.x_adv, "linf", EPS_LINF)
    assert (out.queries > 0).all() and (out.queries <= 1000).all()
    # successful samples stop querying: most need far fewer queries than the budget
    assert out.queries[ok].float().median() < 200


def test_square_l2(mnist_sample, batch):
    model, _ = mnist_sample
    x, y = batch[0][:16], batch[1][:16]
    out = Square(queries=500)(model, x, y, eps=EPS_L2, norm="l2", seed=0)
    assert success(model, out.x_adv, y).float().mean() >= 0.6
    check_budget(model, x, out.x_adv, "l2", EPS_L2)
    assert (out.queries > 0).all() and (out.queries <= 500).all()


def test_square_targeted_hits_targets(mnist_sample, batch):
    model, _ = mnist_sample
    x, y = batch[0][:8], batch[1][:8]
    targets = (y + 1) % 10
    out = Square(queries=1000)(model, x, y, eps=EPS_LINF, norm="linf", targets=targets, seed=0)
    assert success(model, out.x_adv, y, targets).float().mean() >= 0.5
    check_budget(model, x, out.x_adv, "linf", EPS_LINF)


def test_square_is_deterministic_by_seed(no_grad_model, batch):
    x, y = batch[0][:8], batch[1][:8]
    steps: list[int] = []
    attack = Square(queries=50)
    a = attack(no_grad_model, x, y, eps=0.1, norm="linf", seed=3, progress=steps.append)
    b = attack(no_grad_model, x, y, eps=0.1, norm="linf", seed=3)
    c = attack(no_grad_model, x, y, eps=0.1, norm="linf", seed=4)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)
    assert len(steps) > 0


def test_square_on_flat_inputs(tmp_path):
    """Flat inputs are one row of features: the attack still runs and stays in budget."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 3)).eval()
    model = load_model(export_onnx(net, tmp_path / "flat.onnx", torch.zeros(2, 20)))
    x = torch.rand(16, 20, generator=torch.Generator().manual_seed(0))
    y = torch.from_numpy(model.predict(x).labels)
    for norm, eps in (("linf", 0.3), ("l2", 1.0)):
        out = Square(queries=200)(model, x, y, eps=eps, norm=norm, seed=0)
        assert out.x_adv.shape == x.shape
        check_budget(model, x, out.x_adv, norm, eps)
        assert success(model, out.x_adv, y).any()


# ------------------------------------------------------------------------ Substitute
def test_substitute_transfers_and_counts_label_queries(mnist_sample, batch):
    model, _ = mnist_sample
    x, y = batch
    out = Substitute(rounds=3)(model, x, y, eps=EPS_LINF, norm="linf", seed=0)
    assert success(model, out.x_adv, y).float().mean() >= 0.2  # measured 34-47% over seeds
    check_budget(model, x, out.x_adv, "linf", EPS_LINF)
    # each sample pays for itself and its augmented descendants: 2 ** (rounds - 1)
    assert (out.queries == 4).all()


def test_substitute_fgsm_l2_and_determinism(no_grad_model, batch):
    x, y = batch[0][:16], batch[1][:16]
    attack = Substitute(rounds=2, epochs=2, method="fgsm")
    a = attack(no_grad_model, x, y, eps=EPS_L2, norm="l2", seed=1)
    b = attack(no_grad_model, x, y, eps=EPS_L2, norm="l2", seed=1)
    c = attack(no_grad_model, x, y, eps=EPS_L2, norm="l2", seed=2)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)
    norms = (a.x_adv - x).flatten(1).norm(dim=1)
    assert (norms <= EPS_L2 * (1 + 1e-5)).all() and (norms > 0.5 * EPS_L2).all()
    assert (a.queries == 2).all()


def test_substitute_targeted_and_flat_inputs(tmp_path):
    """An MLP substitute for flat inputs; targeted crafting moves towards the target."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 3)).eval()
    model = load_model(export_onnx(net, tmp_path / "flat.onnx", torch.zeros(2, 20)))
    x = torch.rand(64, 20, generator=torch.Generator().manual_seed(0))
    y = torch.from_numpy(model.predict(x).labels)
    targets = (y + 1) % 3
    out = Substitute(rounds=2)(model, x, y, eps=0.2, norm="linf", targets=targets, seed=0)
    check_budget(model, x, out.x_adv, "linf", 0.2)
    assert success(model, out.x_adv, y, targets).float().mean() >= 0.4  # random +-eps noise: 6%


# ------------------------------------------------------------- models without gradients
def test_black_box_attacks_run_without_gradients(no_grad_model, batch):
    x, y = batch[0][:16], batch[1][:16]
    with pytest.raises(UsageError):
        FGSM()(no_grad_model, x, y, eps=EPS_LINF)
    out = Square(queries=300)(no_grad_model, x, y, eps=EPS_LINF, norm="linf", seed=0)
    assert success(no_grad_model, out.x_adv, y).float().mean() >= 0.8
    out = Substitute(rounds=2, epochs=2)(no_grad_model, x, y, eps=EPS_LINF, norm="linf", seed=0)
    assert out.x_adv.shape == x.shape and (out.queries == 2).all()


# -------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "cls, params",
    [
        (Square, {"queries": 0}),
        (Square, {"p_init": 0.0}),
        (Square, {"p_init": 1.5}),
        (Substitute, {"rounds": 0}),
        (Substitute, {"epochs": 0}),
        (Substitute, {"lmbda": -0.1}),
        (Substitute, {"method": "jsma"}),
        (Substitute, {"hidden": "many"}),
    ],
)
def test_invalid_parameters(cls, params):
    with pytest.raises(PluginError):
        cls(**params)


def test_parameters_from_strings():
    assert Square(queries="500", p_init="0.3").params == {"queries": 500, "p_init": 0.3}
    assert Substitute(method="fgsm", rounds="3").rounds == 3
