"""Defences: contract, shapes/ranges/determinism, each defence's defining property, BPDA and EOT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advaudit.defenses import build_stack, get_defense, parse_defense
from advaudit.defenses.defended import DefendedModel
from advaudit.defenses.tvm import total_variation, tv_objective, tv_reconstruct
from advaudit.errors import PluginError, UsageError
from advaudit.registry import get_registry

NAMES = ["jpeg", "gaussian", "median", "bit-depth", "kmeans", "tvm"]


def images(n: int = 4, c: int = 3, side: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random images in [0, 1] (a blurred random field plus a gradient)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, c, side // 4, side // 4, generator=g)
    up = torch.nn.functional.interpolate(base, size=(side, side), mode="bilinear", align_corners=False)
    return up.clamp(0, 1)


def test_every_builtin_defence_is_registered():
    names = get_registry().names("defense")
    for n in NAMES:
        assert n in names


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("c", [1, 3])
def test_shape_range_dtype_and_seeded_determinism(name, c):
    d = get_defense(name)
    x = images(3, c, 16)
    a = d(x, seed=1)
    b = d(x, seed=1)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    # another value range maps through [0, 1] and back
    big = d(x * 255, bounds=(0.0, 255.0), seed=1)
    assert big.min() >= 0 and big.max() <= 255
    assert torch.allclose(big / 255, a, atol=2e-3 if name != "jpeg" else 1 / 255 + 1e-4)
    if d.randomized:
        assert not torch.equal(d(x, seed=1), d(x, seed=2))


def test_bit_depth_quantises_to_2_pow_bits_levels():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for bits in (1, 2, 3):
        out = get_defense("bit-depth", bits=str(bits))(x)
        levels = torch.unique(out)
        assert len(levels) <= 2**bits
        assert torch.allclose(levels * (2**bits - 1), torch.round(levels * (2**bits - 1)), atol=1e-5)
        assert (out - x).abs().max() <= 0.5 / (2**bits - 1) + 1e-6


def test_median_removes_salt_and_pepper_noise():
    x = torch.full((2, 1, 12, 12), 0.5)
    noisy = x.clone()
    noisy[:, :, 3, 4] = 1.0
    noisy[:, :, 8, 8] = 0.0
    assert torch.allclose(get_defense("median", window=3)(noisy), x)
    assert not torch.allclose(get_defense("median", window=1)(noisy), x)


def test_gaussian_smooths_and_keeps_constants():
    x = torch.full((1, 1, 9, 9), 0.3)
    assert torch.allclose(get_defense("gaussian", sigma=1.5)(x), x, atol=1e-6)
    spike = torch.zeros(1, 1, 9, 9)
    spike[0, 0, 4, 4] = 1.0
    out = get_defense("gaussian", sigma=1.0)(spike)
    assert out[0, 0, 4, 4] < 0.2 and out.sum() == pytest.approx(1.0, abs=1e-2)
    # sigma_y only: smooths along the height, leaves the width alone
    out_y = get_defense("gaussian", sigma_x=0.0, sigma_y=1.0)(spike)
    assert torch.all(out_y[0, 0, :, 3] == 0) and out_y[0, 0, 3, 4] > 0


def test_jpeg_is_lossy_and_quality_orders_error():
    x = images(2, 3, 32)
    err = {q: (get_defense("jpeg", quality=q)(x) - x).abs().mean().item() for q in (10, 95)}
    assert 0 < err[95] < err[10]


def test_kmeans_has_at_most_k_colours_per_image_and_approximates():
    x = images(3, 3, 16)
    for k in (2, 5):
        out = get_defense("kmeans", k=k)(x, seed=0)
        for i in range(len(x)):
            colours = torch.unique(out[i].reshape(3, -1).T, dim=0)
            assert len(colours) <= k
    err2 = (get_defense("kmeans", k=2)(x) - x).abs().mean()
    err8 = (get_defense("kmeans", k=8)(x) - x).abs().mean()
    assert err8 < err2


def test_tvm_reduces_total_variation_and_keeps_kept_pixels_close():
    x = images(4, 3, 16)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    d = get_defense("tvm", drop=0.5, weight=0.03)
    out = d(noisy, seed=3)
    assert torch.all(total_variation(out) < 0.8 * total_variation(noisy))
    mask = d.draw_mask(noisy.shape, torch.Generator().manual_seed(3)).expand_as(noisy).bool()
    kept_err = (out - noisy)[mask].abs().mean()
    dropped_err = (out - noisy)[~mask].abs().mean()
    assert kept_err < dropped_err and kept_err < 0.05


def test_tvm_solver_decreases_the_objective_towards_a_minimum():
    x = images(2, 1, 12)
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    f = [tv_objective(tv_reconstruct(x, mask, 0.3, 2, it), x, mask, 0.3).sum().item() for it in (0, 20, 300)]
    assert f[2] < f[1] < f[0]
    f1 = tv_objective(tv_reconstruct(x, mask, 0.3, 1, 300), x, mask, 0.3, norm=1).sum().item()
    assert f1 < tv_objective(x, x, mask, 0.3, norm=1).sum().item()


def test_parse_and_bad_specs():
    assert parse_defense("tvm:drop=0.5, weight=0.03") == ("tvm", {"drop": "0.5", "weight": "0.03"})
    stack = build_stack(["jpeg:quality=90", "bit-depth:bits=3"])
    assert [d.spec() for d in stack] == ["jpeg:quality=90", "bit-depth:bits=3"]
    with pytest.raises(PluginError, match="unknown defense 'nope'"):
        build_stack(["nope"])
    with pytest.raises(PluginError, match="no parameter 'q'"):
        build_stack(["jpeg:q=3"])
    with pytest.raises(PluginError, match="not a valid int"):
        build_stack(["jpeg:quality=high"])
    with pytest.raises(PluginError, match="quality must be"):
        build_stack(["jpeg:quality=0"])
    with pytest.raises(UsageError):
        parse_defense("jpeg:quality")


@pytest.mark.parametrize("name", ["jpeg", "bit-depth"])
def test_bpda_gives_nonzero_gradients_where_the_defence_has_none(name):
    d = get_defense(name)
    x = images(2, 3, 16).requires_grad_(True)
    out = d.bpda(x)
    assert torch.allclose(out, d(x.detach()))  # forward: the real defence
    (g,) = torch.autograd.grad((out * torch.arange(out.numel()).reshape(out.shape)).sum(), x)
    assert g.abs().sum() > 0
    assert torch.allclose(g, torch.arange(out.numel(), dtype=g.dtype).reshape(out.shape))  # identity backward


def test_bpda_uses_the_exact_gradient_of_a_differentiable_defence():
    d = get_defense("gaussian", sigma=1.0)
    x = images(1, 1, 8).requires_grad_(True)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    (g_bpda,) = torch.autograd.grad((d.bpda(x) * w).sum(), x)
    (g_true,) = torch.autograd.grad((d.purify(x, torch.Generator()) * w).sum(), x)
    assert torch.allclose(g_bpda, g_true, atol=1e-6)
    assert not torch.allclose(g_bpda, w)


def test_eot_averages_over_draws(mnist_sample):
    model, data = mnist_sample
    x = torch.from_numpy(data.x[:4])
    stack = build_stack(["tvm:iters=5"])
    one = DefendedModel(model, stack, eot=1, seed=0)
    many = DefendedModel(model, stack, eot=6, seed=0)
    assert many.eot == 6
    with torch.no_grad():
        avg = many.logits(x)
        ref_gen = DefendedModel(model, stack, eot=1, seed=0)
        draws = torch.stack([torch.log_softmax(ref_gen.logits(x), -1) for _ in range(6)])
    assert torch.allclose(avg, draws.mean(0), atol=1e-5)
    assert not torch.allclose(draws[0], draws[1])  # the draws differ
    # deterministic stacks need no EOT
    assert DefendedModel(model, build_stack(["jpeg"]), eot=6).eot == 1
    # verification draws are seeded and fixed: the same call gives the same labels
    assert np.array_equal(one.predict(data.x[:16]).labels, one.predict(data.x[:16]).labels)
