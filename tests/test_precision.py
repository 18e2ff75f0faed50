"""Search precision: attacks may search in bf16, but success is only ever decided in float32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advaudit.attacks.runner import run_attacks
from advaudit.attacks.suites import AttackChoice
from advaudit.data import load_data, prepare
from advaudit.models import load_model
from advaudit.models.precision import resolve

from .conftest import SAMPLE_MODELS


@pytest.fixture()
def onnx_pair():
    """Two fresh loads of the sample ONNX model: one searching in bf16, one in fp32."""
    bf16, fp32 = load_model(SAMPLE_MODELS / "mnist_cnn.onnx"), load_model(SAMPLE_MODELS / "mnist_cnn.onnx")
    bf16.set_search_precision("bf16")
    fp32.set_search_precision("fp32")
    data = prepare(load_data(SAMPLE_MODELS / "data" / "mnist_test_1k.npz", n=64), bf16)
    return bf16, fp32, data


def test_resolve():
    assert resolve("fp32", torch.device("cpu")) == "fp32"
    assert resolve("bf16", torch.device("cpu")) == "bf16"
    assert resolve("auto", torch.device("cpu")) in ("bf16", "fp32")
    with pytest.raises(ValueError, match="unknown precision"):
        resolve("fp16", torch.device("cpu"))


def test_bf16_search_logits_are_close_and_differentiable(onnx_pair):
    bf16, fp32, data = onnx_pair
    assert bf16.search_precision == "bf16" and fp32.search_precision == "fp32"
    x = torch.from_numpy(data.x).requires_grad_(True)
    y = torch.from_numpy(data.y)
    got = bf16.search_logits(x, y)
    ref = fp32.logits(x.detach())
    assert got.dtype == torch.float32
    scale = float(ref.abs().max())
    assert float((got.detach() - ref).abs().max()) < 0.05 * scale
    assert float((got.detach() - ref).abs().max()) > 0  # really reduced precision, not the fp32 path
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(got, y), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.equal(fp32.search_logits(x.detach(), y), ref)  # fp32: exactly the model's logits


def test_rows_that_look_adversarial_are_rescored_in_fp32(onnx_pair):
    bf16, _, data = onnx_pair
    x = torch.from_numpy(data.x)
    ref = bf16.logits(x)
    wrong = (torch.from_numpy(data.y) + 1) % 10  # pretend every label is wrong: every row looks adversarial
    got = bf16.search_logits(x, wrong)
    assert torch.equal(got, ref)
    scores = bf16.search_scores(x, wrong)
    np.testing.assert_allclose(scores.numpy(), bf16.query(x).log_probs, rtol=0, atol=0)
    right = bf16.search_scores(x, torch.from_numpy(data.y))
    assert not np.array_equal(right.numpy(), bf16.query(x).log_probs)  # the bf16 rows


def test_attacks_agree_across_precisions(onnx_pair):
    bf16, fp32, data = onnx_pair
    for choice in (AttackChoice("pgd", {"steps": 10}), AttackChoice("square", {"queries": 100})):
        a = run_attacks(bf16, data.x, data.y, [choice], [0.3], seed=0)
        b = run_attacks(fp32, data.x, data.y, [choice], [0.3], seed=0)
        # verified counts can differ by the odd sample; the search is a heuristic in both
        assert abs(a.robust_accuracy - b.robust_accuracy) <= 0.05, choice
        again = run_attacks(bf16, data.x, data.y, [choice], [0.3], seed=0)
        np.testing.assert_array_equal(a.adv[0.3], again.adv[0.3])  # deterministic in bf16 too


def test_fallback_to_fp32_for_wrappers_and_fixed_batches(onnx_pair):
    from advaudit.defenses import build_stack
    from advaudit.defenses.defended import DefendedModel

    bf16, _, data = onnx_pair
    defended = DefendedModel(bf16, build_stack(["jpeg:quality=75"]))
    defended.set_search_precision("bf16")
    assert defended.search_precision == "fp32"  # a bf16 copy of the bare network would skip the defence


def test_cli_reports_the_precision_used(tmp_path):
    from .test_attack_cli import cli

    args = ["attack", str(SAMPLE_MODELS / "mnist_cnn.onnx"), "--data",
            str(SAMPLE_MODELS / "data" / "mnist_test_1k.npz"),
            "--n", "20", "--attack", "pgd:steps=5", "--eps", "0.3", "-q"]
    for precision in ("fp32", "bf16"):
        report = tmp_path / f"{precision}.json"
        result = cli(*args, "--precision", precision, "--report", str(report))
        assert result.returncode == 0, result.stderr
        assert json.loads(report.read_text())["model"]["search_precision"] == precision
    result = cli(*args, "--precision", "fp16")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_rescored_rows_keep_their_gradient(onnx_pair):
    bf16, _, data = onnx_pair
    x = torch.from_numpy(data.x[:8]).requires_grad_(True)
    wrong = (torch.from_numpy(data.y[:8]) + 1) % 10
    out = bf16.search_logits(x, wrong)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    assert (grad.flatten(1).abs().sum(1) > 0).all()  # a false alarm must not freeze the search
