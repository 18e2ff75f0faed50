"""Graphs that end in probabilities: the tensor feeding the final softmax/sigmoid is the logits.

The regression: a LeNet whose graph ended in ``softmax(10 z)`` reported 33.5 % robust accuracy at
eps 0.3 where the truth is 0 %, because attacks searched on the log of saturated probabilities.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from advaudit.cli import main
from advaudit.models import load_model
from advaudit.models.convert import find_logits

from .conftest import SAMPLE_MODELS, export_onnx

MNIST = SAMPLE_MODELS / "data" / "mnist_test_1k.npz"


class Scaled(torch.nn.Module):
    """``activation(scale * net(x))``: a trained net made to end in saturated probabilities."""

    def __init__(self, net: torch.nn.Module, scale: float = 10.0, activation: str = "softmax") -> None:
        super().__init__()
        self.net, self.scale, self.activation = net, scale, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scale * self.net(x)
        return torch.softmax(z, dim=1) if self.activation == "softmax" else torch.sigmoid(z)


def _sample_net() -> torch.nn.Module:
    """The bundled trained MNIST CNN as an eager module (so it can be wrapped and traced)."""
    from onnx2torch import convert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(str(SAMPLE_MODELS / "mnist_cnn.onnx")).eval()


def _mnist(n: int) -> np.ndarray:
    return np.load(MNIST)["x"][:n].astype(np.float32) / 255.0


def _graph(*nodes: onnx.NodeProto, opset: int = 13) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel())
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["z"]), *nodes], "g", [x], [y], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    "nodes, expected",
    [
        ([helper.make_node("Softmax", ["z"], ["y"], axis=-1)], ("z", "Softmax")),
        ([helper.make_node("Softmax", ["z"], ["s"]), helper.make_node("Identity", ["s"], ["y"])], ("z", "Softmax")),
        ([helper.make_node("Softmax", ["z"], ["s"]), helper.make_node("Flatten", ["s"], ["y"])], ("z", "Softmax")),
        ([helper.make_node("Softmax", ["z"], ["s"]), helper.make_node("Log", ["s"], ["y"])], ("z", "Softmax")),
        ([helper.make_node("Sigmoid", ["z"], ["y"])], ("z", "Sigmoid")),
        ([helper.make_node("LogSoftmax", ["z"], ["y"])], None),
        ([helper.make_node("Softmax", ["z"], ["y"], axis=0)], None),
        ([helper.make_node("Relu", ["z"], ["y"])], None),
        ([helper.make_node("Log", ["z"], ["y"])], None),
    ],
)
def test_find_logits(nodes: list, expected: tuple[str, str] | None) -> None:
    found = find_logits(_graph(*nodes))
    assert (None if found is None else (found.tensor, found.activation)) == expected


def test_softmax_graph_takes_its_input_as_logits(tmp_path: Path) -> None:
    path = export_onnx(Scaled(_sample_net()), tmp_path / "soft.onnx", torch.zeros(2, 1, 28, 28), output_name="probs")
    model = load_model(path)
    assert model.output_kind == "logits"
    assert model.details["final_activation"] == "Softmax"
    assert "logits_from" in model.describe()
    x = _mnist(32)
    pred = model.predict(x)
    # Labels are the real output's argmax in ONNX Runtime; outputs are 10x the plain network's logits.
    probs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_array_equal(pred.labels, probs.argmax(1))
    with torch.no_grad():
        plain = _sample_net()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(pred.outputs, 10 * plain, rtol=1e-4, atol=1e-3)
    assert float(np.abs(probs - 1).min()) == 0.0  # saturated: log-probabilities would be flat
    # The twin's logits carry gradient where log(probabilities) has none.
    xt = torch.from_numpy(x).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.logits(xt).max(dim=1).values.sum(), xt)
    assert int((grad.flatten(1).abs().amax(1) > 0).sum()) == len(x)


def test_torchscript_softmax_takes_its_input_as_logits(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(Scaled(_sample_net()).eval(), torch.zeros(2, 1, 28, 28))
    path = tmp_path / "soft.pt"
    traced.save(str(path))
    model = load_model(path, spec={"input_shape": (1, 28, 28)})
    assert model.output_kind == "logits" and model.details["final_activation"] == "Softmax"
    x = _mnist(16)
    pred = model.predict(x)
    with torch.no_grad():
        real = traced(torch.from_numpy(x)).numpy()
        plain = _sample_net()(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(pred.labels, real.argmax(1))
    np.testing.assert_allclose(pred.outputs, 10 * plain, rtol=1e-4, atol=1e-3)
    assert model.torch_module() is not None


def test_sigmoid_graph(tmp_path: Path) -> None:
    path = export_onnx(Scaled(_sample_net(), activation="sigmoid"), tmp_path / "sig.onnx", torch.zeros(2, 1, 28, 28))
    model = load_model(path)
    assert model.details["final_activation"] == "Sigmoid" and model.has_gradients
    x = _mnist(8)
    with torch.no_grad():
        plain = _sample_net()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x).outputs, 10 * plain, rtol=1e-4, atol=1e-3)


def test_plain_logits_graph_unchanged() -> None:
    model = load_model(SAMPLE_MODELS / "mnist_cnn.onnx")
    assert "logits_from" not in model.details and model.output_kind == "logits"


def test_softmax_model_attack_finds_the_truth(tmp_path: Path) -> None:
    """The held-out regression in small: the default suite's white-box stages reach the truth (0 %)."""
    path = export_onnx(Scaled(_sample_net()), tmp_path / "soft.onnx", torch.zeros(2, 1, 28, 28), output_name="probs")
    report = tmp_path / "r.json"
    code = main(["-q", "attack", str(path), "--data", str(MNIST), "--suite", "standard",
                 "--eps", "0.3", "--n", "40", "--report", str(report), "--format", "json"])
    assert code == 0
    data = json.loads(report.read_text())
    rows = {r["attack"]: r for r in data["results"]}
    assert data["robust_accuracy"] == 0.0
    assert rows["square"]["verified"] == 0  # nothing was left for the black-box stage
    assert "Softmax" in data["model"]["logits_from"]


def test_harden_keeps_the_final_softmax(tmp_path: Path) -> None:
    """Training runs on the logits; the exported file ends in the original softmax again."""
    net = Scaled(_sample_net())
    onnx_path = export_onnx(net, tmp_path / "soft.onnx", torch.zeros(2, 1, 28, 28), output_name="probs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts_path = tmp_path / "soft.pt"
        torch.jit.trace(net.eval(), torch.zeros(2, 1, 28, 28)).save(str(ts_path))
    x = _mnist(8)
    for path in (onnx_path, ts_path):
        out = tmp_path / f"hard{path.suffix}"
        code = main(["-q", "harden", str(path), "--data", str(MNIST), "--n", "64", "--eval-data", str(MNIST),
                     "--eval-n", "16", "--eps", "0.1", "--epochs", "1", "--eval-suite", "quick",
                     "--input-shape", "1,28,28", "--out", str(out), "--report", str(tmp_path / "h.json")])
        assert code == 0
        hardened = load_model(out, spec={"input_shape": (1, 28, 28)})
        assert hardened.details["final_activation"] == "Softmax"
        probs = torch.softmax(torch.from_numpy(hardened.predict(x).outputs), dim=1).numpy()
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
