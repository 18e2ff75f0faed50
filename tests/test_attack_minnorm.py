"""Minimum-norm attacks (C&W L2, DeepFool, JSMA) on the bundled MNIST CNN.

Success is always judged by ``model.predict``, the deployment runtime (ONNX Runtime), not by the
differentiable twin the attacks optimise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advaudit.attacks.base import lp_norm
from advaudit.attacks.cw import CarliniWagnerL2, from_tanh_space, to_tanh_space
from advaudit.attacks.deepfool import DeepFool
from advaudit.attacks.fgsm import FGSM
from advaudit.attacks.jsma import JSMA
from advaudit.errors import PluginError, UsageError


@pytest.fixture(scope="module")
def batch(mnist_sample):
    """64 correctly classified MNIST images, their labels, and random targets different from the labels."""
    model, data = mnist_sample
    x, y = torch.from_numpy(data.x[:80]), torch.from_numpy(data.y[:80])
    correct = torch.from_numpy(model.predict(x).labels) == y
    x, y = x[correct][:64], y[correct][:64]
    gen = torch.Generator().manual_seed(0)
    targets = (y + 1 + torch.randint(0, 9, (len(y),), generator=gen)) % 10
    return model, x, y, targets


def runtime_labels(model, x_adv: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(model.predict(x_adv).labels)


def in_range(model, x_adv: torch.Tensor) -> bool:
    lo, hi = model.spec.range
    return bool(x_adv.min() >= lo and x_adv.max() <= hi)


def fgsm_needed_eps(model, x: torch.Tensor, y: torch.Tensor, norm: str, grid: np.ndarray) -> torch.Tensor:
    """Smallest eps of ``grid`` at which FGSM fools the runtime, per sample (inf where none does)."""
    needed = torch.full((len(x),), float("inf"))
    for eps in grid[::-1]:
        fooled = runtime_labels(model, FGSM()(model, x, y, eps=float(eps), norm=norm).x_adv) != y
        needed[fooled] = float(eps)
    return needed


# ---------------------------------------------------------------------------------------- C&W L2
def test_cw_defaults_fool_nearly_all_images_with_small_l2(batch):
    model, x, y, _ = batch
    x, y = x[:32], y[:32]
    out = CarliniWagnerL2()(model, x, y, eps=None, norm="l2")
    fooled = runtime_labels(model, out.x_adv) != y
    assert fooled.float().mean() >= 0.95
    l2 = lp_norm(out.x_adv - x, "l2")
    assert l2[fooled].median() < 3.0
    assert torch.equal(out.x_adv[~fooled], x[~fooled])
    assert in_range(model, out.x_adv)


def test_cw_targeted_hits_targets(batch):
    model, x, y, targets = batch
    x, y, targets = x[:16], y[:16], targets[:16]
    out = CarliniWagnerL2(binary_search_steps=2, steps=50)(model, x, y, eps=None, norm="l2", targets=targets)
    assert (runtime_labels(model, out.x_adv) == targets).float().mean() >= 0.9
    assert in_range(model, out.x_adv)


def test_cw_is_deterministic_and_counts_queries(batch):
    model, x, y, _ = batch
    attack = CarliniWagnerL2(binary_search_steps=2, steps=20)
    first = attack(model, x[:8], y[:8], eps=None, norm="l2")
    second = attack(model, x[:8], y[:8], eps=None, norm="l2")
    assert torch.equal(first.x_adv, second.x_adv)
    assert torch.equal(first.queries, second.queries)
    assert bool((first.queries >= 2).all() and (first.queries <= 40).all())


def test_cw_confidence_leaves_a_margin(batch):
    model, x, y, _ = batch
    out = CarliniWagnerL2(binary_search_steps=3, steps=50, confidence=5.0)(model, x[:8], y[:8], eps=None, norm="l2")
    logits = torch.from_numpy(model.predict(out.x_adv).outputs)
    fooled = logits.argmax(dim=1) != y[:8]
    assert fooled.float().mean() >= 0.75
    true = logits.gather(1, y[:8, None]).squeeze(1)
    other = logits.scatter(1, y[:8, None], float("-inf")).amax(dim=1)
    assert bool(((other - true)[fooled] >= 5.0 - 1e-3).all())


def test_tanh_space_round_trip_on_any_range():
    x = torch.tensor([[0.0, 1.0, 127.5, 254.0, 255.0]])
    back = from_tanh_space(to_tanh_space(x, 0.0, 255.0), 0.0, 255.0)
    assert torch.isfinite(to_tanh_space(x, 0.0, 255.0)).all()
    assert torch.allclose(back, x, atol=1e-3)
    assert back.min() >= 0.0 and back.max() <= 255.0


# ---------------------------------------------------------------------------------------- DeepFool
def test_deepfool_l2_beats_fgsm(batch):
    model, x, y, _ = batch
    x, y = x[:32], y[:32]
    out = DeepFool()(model, x, y, eps=None, norm="l2")
    fooled = runtime_labels(model, out.x_adv) != y
    assert fooled.float().mean() >= 0.95
    assert in_range(model, out.x_adv)
    l2 = lp_norm(out.x_adv - x, "l2")
    needed = fgsm_needed_eps(model, x, y, "l2", np.arange(0.5, 10.01, 0.5))
    both = fooled & torch.isfinite(needed)
    assert both.sum() >= 0.8 * len(x)
    assert (l2[both] < needed[both]).float().mean() >= 0.9
    assert l2[fooled].median() < needed[both].median()


def test_deepfool_linf(batch):
    model, x, y, _ = batch
    x, y = x[:32], y[:32]
    out = DeepFool()(model, x, y, eps=None, norm="linf")
    fooled = runtime_labels(model, out.x_adv) != y
    assert fooled.float().mean() >= 0.95
    assert in_range(model, out.x_adv)
    linf = lp_norm(out.x_adv - x, "linf")
    needed = fgsm_needed_eps(model, x, y, "linf", np.arange(0.02, 0.51, 0.02))
    both = fooled & torch.isfinite(needed)
    assert linf[both].median() < needed[both].median()


def test_deepfool_returns_clean_input_where_it_fails(batch):
    model, x, y, _ = batch
    out = DeepFool(steps=1, overshoot=0.0)(model, x[:32], y[:32], eps=None, norm="l2")
    fooled = runtime_labels(model, out.x_adv) != y[:32]
    assert (~fooled).any()
    assert torch.equal(out.x_adv[~fooled], x[:32][~fooled])


def test_deepfool_is_deterministic_and_untargeted_only(batch):
    model, x, y, targets = batch
    first = DeepFool(candidates=3)(model, x[:16], y[:16], eps=None, norm="l2")
    second = DeepFool(candidates=3)(model, x[:16], y[:16], eps=None, norm="l2")
    assert torch.equal(first.x_adv, second.x_adv)
    with pytest.raises(UsageError):
        DeepFool()(model, x[:4], y[:4], eps=None, norm="l2", targets=targets[:4])


def test_deepfool_scales_with_the_value_range(batch, sample_models):
    from advaudit.models import load_model

    model, x, y, _ = batch
    model255 = load_model(sample_models / "mnist_cnn.onnx", spec={"range": (0, 255), "std": 255})
    x, y = x[:8], y[:8]
    out = DeepFool(candidates=4)(model, x, y, eps=None, norm="l2")
    out255 = DeepFool(candidates=4)(model255, x * 255, y, eps=None, norm="l2")
    assert in_range(model255, out255.x_adv) and out255.x_adv.max() > 1.0
    assert (runtime_labels(model255, out255.x_adv) != y).float().mean() >= 0.9
    l2, l2_255 = lp_norm(out.x_adv - x, "l2"), lp_norm(out255.x_adv - x * 255, "l2")
    assert torch.allclose(l2_255, 255 * l2, rtol=0.05)


# ---------------------------------------------------------------------------------------- JSMA
def l0_fraction(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return lp_norm(x_adv - x, "l0") / x[0].numel()


@pytest.mark.parametrize("theta, floor", [(-1.0, 0.8), (1.0, 0.6)])
def test_jsma_reaches_targets_within_gamma(batch, theta, floor):
    model, x, y, targets = batch
    out = JSMA(theta=theta)(model, x, y, eps=None, norm="l2", targets=targets)
    hit = runtime_labels(model, out.x_adv) == targets
    assert hit.float().mean() >= floor
    assert bool((l0_fraction(out.x_adv, x) <= 0.1).all())
    assert torch.equal(out.x_adv[~hit], x[~hit])
    assert in_range(model, out.x_adv)


def test_jsma_logit_saliency_searches_pairs(batch):
    model, x, y, targets = batch
    out = JSMA(saliency="logits")(model, x[:16], y[:16], eps=None, norm="linf", targets=targets[:16])
    hit = runtime_labels(model, out.x_adv) == targets[:16]
    assert hit.float().mean() >= 0.25
    assert bool((l0_fraction(out.x_adv, x[:16]) <= 0.1).all())
    assert in_range(model, out.x_adv)


def test_jsma_range_and_determinism_on_0_255(batch, sample_models):
    from advaudit.models import load_model

    model, x, y, targets = batch
    model255 = load_model(sample_models / "mnist_cnn.onnx", spec={"range": (0, 255), "std": 255})
    out = JSMA(theta=-1.0)(model, x[:16], y[:16], eps=None, norm="l2", targets=targets[:16])
    out255 = JSMA(theta=-1.0)(model255, x[:16] * 255, y[:16], eps=None, norm="l2", targets=targets[:16])
    again = JSMA(theta=-1.0)(model255, x[:16] * 255, y[:16], eps=None, norm="l2", targets=targets[:16])
    assert torch.equal(out255.x_adv, again.x_adv)
    assert in_range(model255, out255.x_adv)
    assert torch.equal(lp_norm(out255.x_adv - x[:16] * 255, "l0"), lp_norm(out.x_adv - x[:16], "l0"))


def test_jsma_is_targeted_only(batch):
    model, x, y, _ = batch
    with pytest.raises(UsageError):
        JSMA()(model, x[:4], y[:4], eps=None, norm="l2")


# ---------------------------------------------------------------------------------------- shared
@pytest.mark.parametrize(
    "cls, params",
    [
        (CarliniWagnerL2, {"steps": 0}),
        (CarliniWagnerL2, {"binary_search_steps": 0}),
        (CarliniWagnerL2, {"lr": -0.1}),
        (CarliniWagnerL2, {"initial_const": 0.0}),
        (CarliniWagnerL2, {"confidence": -1.0}),
        (DeepFool, {"candidates": 1}),
        (DeepFool, {"overshoot": -0.1}),
        (DeepFool, {"steps": 0}),
        (JSMA, {"gamma": 0.0}),
        (JSMA, {"gamma": 1.5}),
        (JSMA, {"theta": 0.0}),
        (JSMA, {"theta": 2.0}),
        (JSMA, {"saliency": "softmax"}),
    ],
)
def test_invalid_params_raise(cls, params):
    with pytest.raises(PluginError):
        cls(**params)


def test_cli_strings_are_coerced():
    assert CarliniWagnerL2(steps="10", lr="0.5").params["steps"] == 10
    assert JSMA(gamma="0.2").params["gamma"] == 0.2
    with pytest.raises(PluginError):
        DeepFool(candidates="many")


def test_capabilities():
    assert CarliniWagnerL2.minimum_norm and DeepFool.minimum_norm and JSMA.minimum_norm
    assert CarliniWagnerL2.norms == ("l2",)
    assert not DeepFool.supports_targeted and not JSMA.supports_untargeted


def test_progress_is_reported(batch):
    model, x, y, targets = batch
    steps: list[int] = []
    DeepFool()(model, x[:4], y[:4], eps=None, norm="l2", progress=steps.append)
    JSMA()(model, x[:4], y[:4], eps=None, norm="l2", targets=targets[:4], progress=steps.append)
    CarliniWagnerL2(binary_search_steps=1, steps=5)(model, x[:4], y[:4], eps=None, norm="l2", progress=steps.append)
    assert len(steps) >= 7 and set(steps) == {1}
