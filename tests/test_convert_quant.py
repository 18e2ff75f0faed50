"""Quantised graphs and piecewise-constant ops in the onnx2torch twin (advaudit.models.convert.quant/ste).

Forward: the twin must agree with ONNX Runtime.  The converters follow MLAS's float32 operation
order, so the expected agreement is bit-exact; the checks allow at most ``MAX_OFF_FRACTION`` of the
elements to be off by one quantum (a pre-rounding value within float rounding of a .5 boundary,
which a different ORT kernel -- AVX2 vs AVX-512 vs ARM -- may round the other way) and nothing
larger.  Float outputs (the dequantised logits) are compared in the same units: the scale of the
final ``DequantizeLinear``, or 1e-5 of the logit range for a float head.

Backward: straight-through -- identity inside the representable range of QuantizeLinear ->
DequantizeLinear and zero outside, 1/scale for QuantizeLinear alone, identity through Round, Floor,
Ceil, Sign and float -> uint8 -> float casts, non-zero input gradients through whole quantised CNNs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx2torch import convert
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from advaudit.models.convert import quant, ste

from .conftest import export_onnx

MAX_OFF_FRACTION = 0.005  # elements allowed off by exactly one quantum
SHAPE = (3, 5, 7)  # odd input shape: channels, height, width
# ORT's u8s8 kernels on x86 CPUs without VNNI add pairs of 8-bit products in saturating int16
# (ORT documents this and recommends reduce_range): 7-bit weights keep every CPU on ONNX semantics.
REDUCE_RANGE = True


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    torch.set_num_threads(1)
    quant.register()
    ste.register()
    quant.register()  # idempotent
    ste.register()


# ------------------------------------------------------------------------------ helpers
def _ort(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX Runtime's outputs (CPU, default graph optimisations: what a deployment runs)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _twin(model: onnx.ModelProto | Path) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(onnx.load(str(model)) if isinstance(model, Path) else model).eval()


def _outputs(result: torch.Tensor | Sequence[torch.Tensor]) -> list[np.ndarray]:
    tensors = [result] if isinstance(result, torch.Tensor) else list(result)
    return [t.detach().numpy() for t in tensors]


def assert_agrees(twin: np.ndarray, ref: np.ndarray, quantum: float) -> None:
    """Equal, except at most MAX_OFF_FRACTION of the elements off by one ``quantum``."""
    assert twin.shape == ref.shape
    diff = np.abs(twin.astype(np.float64) - ref.astype(np.float64))
    tol = 1e-6 * max(1.0, float(np.abs(ref).max()))
    off = diff > tol
    assert diff.max() <= quantum * 1.001 + tol, f"max |twin - ORT| = {diff.max():.4g} > one quantum {quantum:.4g}"
    assert off.mean() <= MAX_OFF_FRACTION, f"{off.mean():.2%} of elements off by one quantum"


def _model(nodes: list, inputs: list, outputs: list, inits: Sequence[tuple[str, np.ndarray]] = (),
           opset: int = 13, ms: bool = False) -> onnx.ModelProto:
    """A model of one graph; ``ms`` adds the com.microsoft opset."""
    tensors = [numpy_helper.from_array(array, name) for name, array in inits]
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    graph = helper.make_graph(nodes, "g", inputs, outputs, tensors)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8 if opset < 21 else 10
    return model


def _vi(name: str, elem: int, shape: Sequence[int | str | None] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


def _grad(twin: torch.nn.Module, x: np.ndarray, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient w.r.t. the input of the (weighted) sum of the twin's first output."""
    xt = torch.tensor(x, requires_grad=True)
    out = twin(xt)
    out = out[0] if isinstance(out, (tuple, list)) else out
    (out * (1 if weights is None else weights)).sum().backward()
    return xt.grad


# ------------------------------------------------------------------------------ registry
def test_register_is_idempotent_and_covers_every_opset_version() -> None:
    for version in (10, 13, 19, 21):
        for op in ("QuantizeLinear", "DequantizeLinear"):
            assert ste.is_ours(_CONVERTER_REGISTRY[OperationDescription("", op, version)])
    for op in ("QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QGemm", "QuantizeLinear"):
        assert ste.is_ours(_CONVERTER_REGISTRY[OperationDescription("com.microsoft", op, 1)])
    for op, version in (("Round", 11), ("Floor", 13), ("Cast", 13), ("Cast", 19), ("Sign", 13)):
        assert ste.is_ours(_CONVERTER_REGISTRY[OperationDescription("", op, version)])
    assert set(quant.STRAIGHT_THROUGH_QUANT_OPS) < set(quant.QUANT_OPS)
    assert "QuantizeLinear" in quant.QUANT_OPS and "Round" in ste.STRAIGHT_THROUGH_OPS


def test_float_conv_with_initializer_weights_is_still_onnx2torch(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.Flatten()).eval()
    path = export_onnx(net, tmp_path / "f.onnx", torch.zeros(1, *SHAPE))
    twin = _twin(path)
    assert any(isinstance(m, torch.nn.Conv2d) for m in twin.modules())
    x = np.random.default_rng(0).standard_normal((4, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(_outputs(twin(torch.from_numpy(x)))[0], _ort(path, {"input": x})[0], atol=1e-5)
    assert ste.straight_through_ops(onnx.load(str(path))) == []


# ------------------------------------------------------------------------------ QDQ primitives
QDQ_CASES = [
    # opset, per-axis, zero-point type
    (10, False, TensorProto.UINT8),
    (13, False, TensorProto.INT8),
    (13, True, TensorProto.UINT8),
    (19, False, TensorProto.UINT8),
    (21, True, TensorProto.INT8),
]


def _qdq_model(opset: int, per_axis: bool, zp_type: int) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    scale = np.array([0.05, 0.02, 0.1], np.float32) if per_axis else np.array(0.04, np.float32)
    zp_np = np.int8 if zp_type == TensorProto.INT8 else np.uint8
    zp = (np.array([0, -20, 5] if zp_type == TensorProto.INT8 else [128, 10, 250]) if per_axis
          else np.array(-3 if zp_type == TensorProto.INT8 else 100)).astype(zp_np)
    attrs = {"axis": 1} if per_axis else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, ["n", *SHAPE])], [_vi("y", TensorProto.FLOAT, None)],
                   [("s", scale), ("z", zp)], opset=opset)
    return model, scale, zp


@pytest.mark.parametrize("opset,per_axis,zp_type", QDQ_CASES)
def test_quantize_dequantize_matches_ort_with_identity_gradient_in_range(
    opset: int, per_axis: bool, zp_type: int
) -> None:
    model, scale, zp = _qdq_model(opset, per_axis, zp_type)
    x = (np.random.default_rng(opset).standard_normal((4, *SHAPE)) * 6).astype(np.float32)
    x[0, 0, 0, :3] = [0.5 * float(scale.flat[0]), 1.5 * float(scale.flat[0]), -2.5 * float(scale.flat[0])]  # ties
    twin = _twin(model)
    (ref,) = _ort(model, {"x": x})
    assert_agrees(_outputs(twin(torch.from_numpy(x)))[0], ref, float(scale.max()))

    grad = _grad(twin, x).numpy()
    s = scale.reshape(1, -1, 1, 1) if per_axis else scale
    z = zp.astype(np.float32).reshape(1, -1, 1, 1) if per_axis else np.float32(zp)
    qmin, qmax = (-128, 127) if zp_type == TensorProto.INT8 else (0, 255)
    inside = (x / s >= qmin - z) & (x / s <= qmax - z)
    assert 0 < inside.mean() < 1  # both regimes are exercised
    np.testing.assert_array_equal(grad, inside.astype(np.float32))


def test_quantize_linear_alone_outputs_integers_with_inverse_scale_gradient() -> None:
    scale = helper.make_node("Constant", [], ["s"], value_float=0.125)  # a Constant node, not an initializer
    nodes = [scale, helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, *SHAPE])], [_vi("q", TensorProto.UINT8, None)],
                   [("z", np.array(7, np.uint8))])
    x = (np.random.default_rng(1).standard_normal((2, *SHAPE)) * 20).astype(np.float32)
    twin = _twin(model)
    (ref,) = _ort(model, {"x": x})
    out = _outputs(twin(torch.from_numpy(x)))[0]
    assert out.dtype == np.float32 and np.array_equal(out, ref.astype(np.float32))
    grad = _grad(twin, x).numpy()
    inside = (x / 0.125 >= -7) & (x / 0.125 <= 248)
    np.testing.assert_array_equal(grad, np.where(inside, 8.0, 0.0).astype(np.float32))


def test_int16_and_com_microsoft_qdq() -> None:
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], domain="com.microsoft"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], domain="com.microsoft")]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, *SHAPE])], [_vi("y", TensorProto.FLOAT, None)],
                   [("s", np.array(1e-3, np.float32)), ("z", np.array(-5, np.int16))], ms=True)
    x = (np.random.default_rng(2).standard_normal((2, *SHAPE)) * 40).astype(np.float32)
    (ref,) = _ort(model, {"x": x})
    twin = _twin(model)
    assert_agrees(_outputs(twin(torch.from_numpy(x)))[0], ref, 1e-3)
    assert (np.abs(ref) > 32).any()  # some values saturate at the int16 range
    assert ste.straight_through_ops(model) == ["QuantizeLinear"]


def test_dynamic_quantize_linear_matches_ort() -> None:
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "ys", "yz"])]
    outs = [_vi("y", TensorProto.UINT8, None), _vi("ys", TensorProto.FLOAT, None), _vi("yz", TensorProto.UINT8, None)]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [3, *SHAPE])], outs, opset=13)
    rng = np.random.default_rng(3)
    twin = _twin(model)
    for x in (rng.standard_normal((3, *SHAPE)).astype(np.float32) * 3 + 1,
              np.abs(rng.standard_normal((3, *SHAPE))).astype(np.float32),  # all positive: zp 0
              np.zeros((3, *SHAPE), np.float32)):  # degenerate range: scale 1
        refs = _ort(model, {"x": x})
        got = _outputs(twin(torch.from_numpy(x)))
        for a, b in zip(got, refs):
            np.testing.assert_array_equal(a, b.astype(np.float32))
    x = rng.standard_normal((3, *SHAPE)).astype(np.float32)
    _, scale, zp = _outputs(twin(torch.from_numpy(x)))
    inside = (x / scale >= -zp) & (x / scale <= 255 - zp)  # all but possibly the extremes (zp is rounded)
    assert inside.mean() > 0.99
    np.testing.assert_allclose(_grad(twin, x).numpy(), inside / scale, rtol=1e-6)


# ------------------------------------------------------------------------------ integer ops, attributes
def test_conv_integer_and_qlinear_conv_attributes_match_ort() -> None:
    rng = np.random.default_rng(4)
    w = rng.integers(-64, 65, (6, 3, 3, 2)).astype(np.int8)  # 7-bit: see REDUCE_RANGE
    w_scale = rng.uniform(0.001, 0.01, 6).astype(np.float32)
    bias = rng.integers(-5000, 5000, 6).astype(np.int32)
    inits = [("w", w), ("xz", np.array(131, np.uint8)), ("wz", np.array(0, np.int8)),
             ("xs", np.array(0.02, np.float32)), ("ws", w_scale), ("ys", np.array(0.03, np.float32)),
             ("yz", np.array(120, np.uint8)), ("b", bias)]
    attr_sets = [dict(pads=[1, 0, 0, 2], strides=[2, 1], dilations=[1, 2]), dict(auto_pad="SAME_UPPER", strides=[2, 2]),
                 dict(auto_pad="SAME_LOWER"), dict(auto_pad="VALID", dilations=[2, 1])]
    x = rng.integers(0, 256, (2, 3, 9, 11)).astype(np.uint8)
    for attrs in attr_sets:
        nodes = [helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["acc"], **attrs),
                 helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], **attrs)]
        outs = [_vi("acc", TensorProto.INT32, None), _vi("y", TensorProto.UINT8, None)]
        model = _model(nodes, [_vi("x", TensorProto.UINT8, [2, 3, 9, 11])], outs, inits)
        refs = _ort(model, {"x": x})
        got = _outputs(_twin(model)(torch.from_numpy(x)))
        np.testing.assert_array_equal(got[0], refs[0].astype(np.float64), err_msg=str(attrs))
        assert_agrees(got[1], refs[1].astype(np.float32), 1.0)
        assert refs[1].min() == 0 or refs[1].max() == 255  # the requantisation saturates somewhere


def test_matmul_integer_and_qlinear_matmul_match_ort() -> None:
    rng = np.random.default_rng(5)
    b = rng.integers(0, 256, (7, 5)).astype(np.uint8)
    b_zp = rng.integers(100, 150, 5).astype(np.uint8)
    inits = [("b", b), ("az", np.array(3, np.uint8)), ("bz", b_zp), ("as", np.array(0.03, np.float32)),
             ("bs", rng.uniform(0.01, 0.02, 5).astype(np.float32)), ("ys", np.array(0.2, np.float32)),
             ("yz", np.array(90, np.uint8)), ("bz1", np.array(128, np.uint8))]
    nodes = [helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["acc"]),
             helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz1", "ys", "yz"], ["y"])]
    outs = [_vi("acc", TensorProto.INT32, None), _vi("y", TensorProto.UINT8, None)]
    model = _model(nodes, [_vi("a", TensorProto.UINT8, [2, 3, 7])], outs, inits)
    a = rng.integers(0, 256, (2, 3, 7)).astype(np.uint8)
    refs = _ort(model, {"a": a})
    got = _outputs(_twin(model)(torch.from_numpy(a)))
    np.testing.assert_array_equal(got[0], refs[0].astype(np.float64))
    assert_agrees(got[1], refs[1].astype(np.float32), 1.0)


@pytest.mark.parametrize("channels_last", [0, 1])
def test_qlinear_global_average_pool_and_binary_ops_match_ort(channels_last: int) -> None:
    shape = [2, 5, 7, 3] if channels_last else [2, 3, 5, 7]
    inits = [("xs", np.array(0.05, np.float32)), ("xz", np.array(-3, np.int8)), ("bs", np.array(0.02, np.float32)),
             ("bz", np.array(7, np.int8)), ("ys", np.array(0.011, np.float32)), ("yz", np.array(-9, np.int8))]
    ms = {"domain": "com.microsoft"}
    binary = ["x", "xs", "xz", "b", "bs", "bz", "ys", "yz"]
    nodes = [helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], ["g"],
                              channels_last=channels_last, **ms),
             helper.make_node("QLinearAdd", binary, ["s"], **ms),
             helper.make_node("QLinearMul", binary, ["p"], **ms)]
    outs = [_vi(name, TensorProto.INT8, None) for name in ("g", "s", "p")]
    inputs = [_vi("x", TensorProto.INT8, shape), _vi("b", TensorProto.INT8, shape[-1:])]
    model = _model(nodes, inputs, outs, inits, ms=True)
    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, shape).astype(np.int8)
    b = rng.integers(-128, 128, shape[-1:]).astype(np.int8)  # broadcast along the last axis
    refs = _ort(model, {"x": x, "b": b})
    got = _outputs(_twin(model)(torch.from_numpy(x), torch.from_numpy(b)))
    for a, r in zip(got, refs):
        assert_agrees(a, r.astype(np.float32), 1.0)
    assert refs[0].shape == ((2, 1, 1, 3) if channels_last else (2, 3, 1, 1))


POOL_ATTRS = [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(kernel_shape=[3, 2], pads=[1, 0, 0, 1], strides=[2, 3], ceil_mode=1),
    dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1, count_include_pad=1, pads=[0, 1, 1, 1]),
]


@pytest.mark.parametrize("attrs", POOL_ATTRS, ids=range(len(POOL_ATTRS)))
def test_qlinear_average_pool_matches_ort(attrs: dict) -> None:
    inits = [("xs", np.array(0.05, np.float32)), ("xz", np.array(100, np.uint8)),
             ("ys", np.array(0.03, np.float32)), ("yz", np.array(128, np.uint8))]
    node = helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft", **attrs)
    model = _model([node], [_vi("x", TensorProto.UINT8, [2, 3, 9, 11])], [_vi("y", TensorProto.UINT8, None)], inits,
                   ms=True)
    x = np.random.default_rng(7).integers(0, 256, (2, 3, 9, 11)).astype(np.uint8)
    (ref,) = _ort(model, {"x": x})
    assert_agrees(_outputs(_twin(model)(torch.from_numpy(x)))[0], ref.astype(np.float32), 1.0)


# ------------------------------------------------------------------------------ input quantisers (ste)
def _quantiser_model(kind: str) -> onnx.ModelProto:
    levels = np.array(255.0 if kind == "Cast" else 7.0, np.float32)
    if kind == "Cast":
        middle = [helper.make_node("Cast", ["m"], ["c"], to=TensorProto.UINT8),
                  helper.make_node("Reshape", ["c", "shape"], ["r"]),  # layout op between the casts
                  helper.make_node("Cast", ["r"], ["q"], to=TensorProto.FLOAT)]
    else:
        middle = [helper.make_node(kind, ["m"], ["q"])]
    nodes = [helper.make_node("Mul", ["x", "k"], ["m"]), *middle, helper.make_node("Div", ["q", "k"], ["y"])]
    inits = [("k", levels), ("shape", np.array([2, *SHAPE], np.int64))]
    return _model(nodes, [_vi("x", TensorProto.FLOAT, [2, *SHAPE])], [_vi("y", TensorProto.FLOAT, None)], inits)


@pytest.mark.parametrize("kind", ["Round", "Floor", "Ceil", "Cast", "Sign"])
def test_input_quantisers_match_ort_and_pass_gradient(kind: str) -> None:
    model = _quantiser_model(kind)
    x = np.random.default_rng(6).random((2, *SHAPE), dtype=np.float32)
    x[0, 0, 0, :2] = [0.5 / 7, 1.5 / 7]  # round-half-even ties for Round (7 * x in float32 is exact here)
    twin = _twin(model)
    np.testing.assert_array_equal(_outputs(twin(torch.from_numpy(x)))[0], _ort(model, {"x": x})[0])
    grad = _grad(twin, x).numpy()
    np.testing.assert_allclose(grad, np.ones_like(x), rtol=1e-6)  # straight-through: d(q(kx)/k)/dx = 1
    assert ste.straight_through_ops(model) == [kind]


def test_integer_casts_of_indices_stay_integer() -> None:
    nodes = [helper.make_node("Cast", ["i"], ["idx"], to=TensorProto.INT64),
             helper.make_node("Gather", ["data", "idx"], ["g"], axis=1),
             helper.make_node("Cast", ["i"], ["ii"], to=TensorProto.INT32)]
    outs = [_vi("g", TensorProto.FLOAT, None), _vi("ii", TensorProto.INT32, None)]
    model = _model(nodes, [_vi("data", TensorProto.FLOAT, [2, 5]), _vi("i", TensorProto.FLOAT, [3])], outs)
    data = np.arange(10, dtype=np.float32).reshape(2, 5)
    idx = np.array([0.7, 3.9, -1.2], np.float32)  # truncation toward zero: 0, 3, -1
    refs = _ort(model, {"data": data, "i": idx})
    got = _twin(model)(torch.from_numpy(data), torch.from_numpy(idx))
    np.testing.assert_array_equal(got[0].numpy(), refs[0])
    assert got[1].dtype == torch.int32 and np.array_equal(got[1].numpy(), refs[1])
    assert ste.straight_through_ops(model) == []


# ------------------------------------------------------------------------------ quantised CNNs (ORT's quantiser)
class _Net(torch.nn.Module):
    """Tiny CNN with the ops ORT's quantiser rewrites: Conv, Add, Mul, Sigmoid, LeakyRelu, MaxPool,
    Concat, MatMul, Gemm; 5-channel convs on 3x5x7 inputs.  (No AveragePool: in QDQ form it shares
    the input's scale, so window means land exactly on .5 ties that ORT itself rounds differently
    with and without graph optimisation; QLinearAveragePool has its own test.)"""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 5, 3, padding=1)
        self.c2 = torch.nn.Conv2d(5, 5, 3, padding=1, groups=5)
        self.c3 = torch.nn.Conv2d(5, 5, 1)
        self.pool = torch.nn.MaxPool2d(2, ceil_mode=True)
        self.w = torch.nn.Parameter(torch.randn(10, 10) / 3)
        self.fc = torch.nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))
        y = y + y * torch.sigmoid(self.c3(y))
        y = self.pool(torch.nn.functional.leaky_relu(self.c2(y), 0.1))
        y = torch.cat([y, self.c3(y)], 1).mean((2, 3), keepdim=True).flatten(1)
        return self.fc(y @ self.w)


class _Reader(CalibrationDataReader):
    def __init__(self, data: np.ndarray) -> None:
        self._it = iter({"input": d[None]} for d in data)

    def get_next(self) -> dict | None:
        return next(self._it, None)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = _Net().eval()
    path = tmp_path_factory.mktemp("quant") / "float.onnx"
    export_onnx(net, path, torch.zeros(1, *SHAPE), output_name="out")
    return path, net


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def _final_scale(model: onnx.ModelProto) -> float:
    """The quantum of the graph output: the scale of the last DequantizeLinear, if it feeds the output."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    last = model.graph.node[-1]
    return float(inits[last.input[1]].max()) if last.op_type == "DequantizeLinear" else 0.0


def _check_twin(path: Path, net: torch.nn.Module, expected_ops: set[str]) -> None:
    model = onnx.load(str(path))
    assert expected_ops <= {n.op_type for n in model.graph.node}
    x = _inputs(64, seed=11)
    (ref,) = _ort(path, {"input": x})
    twin = _twin(path)
    out = _outputs(twin(torch.from_numpy(x)))[0]
    assert_agrees(out, ref, _final_scale(model) or 1e-5 * float(np.abs(ref).max()))
    # gradients: non-zero and pointing the way of the float model's
    weights = torch.from_numpy(np.random.default_rng(12).standard_normal(ref.shape).astype(np.float32))
    grad = _grad(twin, x[:16], weights[:16])
    xf = torch.tensor(x[:16], requires_grad=True)
    (net(xf) * weights[:16]).sum().backward()
    assert (grad.abs().flatten(1).sum(1) > 0).all()
    cosine = torch.nn.functional.cosine_similarity(grad.flatten(), xf.grad.flatten(), dim=0)
    assert cosine > 0.5, f"twin gradient vs float gradient cosine {cosine:.3f}"
    listed = ste.straight_through_ops(model)
    assert "DequantizeLinear" not in listed and ("QuantizeLinear" in listed or "DynamicQuantizeLinear" in listed)


STATIC_CASES = [
    (QuantFormat.QDQ, False, QuantType.QUInt8),
    (QuantFormat.QDQ, True, QuantType.QInt8),
    (QuantFormat.QOperator, False, QuantType.QUInt8),
    (QuantFormat.QOperator, True, QuantType.QInt8),
    (QuantFormat.QOperator, True, QuantType.QUInt8),
]


@pytest.mark.parametrize("fmt,per_channel,activation", STATIC_CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_static_quantised_cnn_twin_matches_ort(float_model: tuple[Path, torch.nn.Module], tmp_path: Path,
                                               fmt: QuantFormat, per_channel: bool, activation: QuantType) -> None:
    path, net = float_model
    qpath = tmp_path / "q.onnx"
    quantize_static(str(path), str(qpath), _Reader(_inputs(32, seed=10)), quant_format=fmt, per_channel=per_channel,
                    activation_type=activation, weight_type=QuantType.QInt8, reduce_range=REDUCE_RANGE)
    expected = ({"QuantizeLinear", "DequantizeLinear", "Conv"} if fmt == QuantFormat.QDQ else
                {"QLinearConv", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat",
                 "QLinearMatMul", "QGemm", "MaxPool"})
    _check_twin(qpath, net, expected)


@pytest.mark.parametrize("weight_type", [QuantType.QInt8, QuantType.QUInt8], ids=lambda v: v.name)
def test_dynamic_quantised_cnn_twin_matches_ort(float_model: tuple[Path, torch.nn.Module], tmp_path: Path,
                                                weight_type: QuantType) -> None:
    path, net = float_model
    qpath = tmp_path / "dq.onnx"
    quantize_dynamic(str(path), str(qpath), weight_type=weight_type, reduce_range=REDUCE_RANGE)
    _check_twin(qpath, net, {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"})


def test_qoperator_twin_lists_its_straight_through_ops(float_model: tuple[Path, torch.nn.Module],
                                                       tmp_path: Path) -> None:
    path, _ = float_model
    qpath = tmp_path / "q.onnx"
    quantize_static(str(path), str(qpath), _Reader(_inputs(8, seed=1)), quant_format=QuantFormat.QOperator,
                    reduce_range=REDUCE_RANGE)
    listed = ste.straight_through_ops(onnx.load(str(qpath)))
    assert listed[0] == "QuantizeLinear" and {"QLinearConv", "QLinearAdd", "QGemm"} <= set(listed)
    assert not {"DequantizeLinear", "MaxPool"} & set(listed)
