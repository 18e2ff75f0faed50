"""Quantised and input-quantising graphs end to end: white-box attacks through straight-through
gradients, every counted example verified in ONNX Runtime."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from advaudit.cli import main
from advaudit.models import load_model

from .conftest import SAMPLE_MODELS, export_onnx

MNIST = SAMPLE_MODELS / "data" / "mnist_test_1k.npz"
CIFAR = SAMPLE_MODELS / "data" / "cifar10_test_1k.npz"
INT8 = SAMPLE_MODELS / "cifar10_resnet20_int8.onnx"


class InputQuantised(torch.nn.Module):
    """``net(round(levels * x) / levels)``: a graph that quantises its own input (a ``Round`` node)."""

    def __init__(self, net: torch.nn.Module, levels: int = 7) -> None:
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * self.levels) / self.levels)


def _sample_net() -> torch.nn.Module:
    from onnx2torch import convert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(str(SAMPLE_MODELS / "mnist_cnn.onnx")).eval()


def _attack(model: Path, data: Path, tmp_path: Path, *args: str) -> dict:
    report = tmp_path / "r.json"
    code = main(["-q", "attack", str(model), "--data", str(data), "--report", str(report), "--format", "json", *args])
    assert code == 0
    return json.loads(report.read_text())


def test_input_quantiser_is_differentiated_straight_through(tmp_path: Path) -> None:
    path = export_onnx(InputQuantised(_sample_net()), tmp_path / "q.onnx", torch.zeros(2, 1, 28, 28))
    model = load_model(path)
    assert model.has_gradients and "Round" in model.gradients.source
    x = torch.from_numpy(np.load(MNIST)["x"][:16].astype(np.float32) / 255).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.logits(x).max(dim=1).values.sum(), x)
    assert bool((grad.flatten(1).abs().amax(1) > 0).all())
    # The default suite: its white-box stage finds what Square alone used to.
    data = _attack(path, MNIST, tmp_path, "--suite", "standard", "--eps", "0.3", "--n", "40")
    rows = {r["attack"]: r for r in data["results"]}
    assert data["robust_accuracy"] == 0.0
    assert rows["apgd-ce"]["verified"] == rows["apgd-ce"]["attacked"] > 0
    assert data["model"]["straight_through"] == ["Round"]


def test_int8_sample_model_white_box(tmp_path: Path) -> None:
    model = load_model(INT8)
    assert model.has_gradients, model.gradients.note
    assert "straight-through gradient through QuantizeLinear" in model.gradients.source
    assert model.search_precision == "fp32"  # a bf16 copy would round the scales
    x = np.load(CIFAR)["x"][:64].astype(np.float32) / 255
    with torch.no_grad():
        twin = model.logits(torch.from_numpy(x)).numpy()
    ort = model.predict(x)
    assert float((twin.argmax(1) == ort.labels).mean()) >= 0.98
    data = _attack(INT8, CIFAR, tmp_path, "--suite", "quick", "--eps", "0.0314", "--n", "32")
    assert data["model"]["gradient_source"].startswith("onnx2torch twin")
    for row in data["results"]:
        assert row["uses_gradients"] and row["verified"] > 0
    assert data["robust_accuracy"] < data["clean_accuracy"]
    # Every counted example re-checked here in ONNX Runtime, inside the budget and range.
    adv = tmp_path / "adv.npz"
    main(["-q", "attack", str(INT8), "--data", str(CIFAR), "--attack", "pgd:steps=10", "--eps", "0.0314",
          "--n", "32", "--save-adv", str(adv)])
    saved = np.load(adv)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(INT8), providers=["CPUExecutionProvider"])
    labels = sess.run(None, {sess.get_inputs()[0].name: saved["x"]})[0].argmax(1)
    assert len(labels) > 0
    np.testing.assert_array_equal(labels, saved["adv_label"])
    assert bool((labels != saved["y"]).all())
    assert float(np.abs(saved["x"] - saved["x_clean"]).max()) <= 0.0314 + 1e-6
    assert float(saved["x"].min()) >= 0.0 and float(saved["x"].max()) <= 1.0
