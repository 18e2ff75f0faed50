"""Dynamically quantised graphs: the twin must equal ONNX Runtime bit for bit (advaudit.models.convert.mlas).

``DynamicQuantizeLinear`` takes its scale from the min and max of its float input, so a float op of
the twin that is one ulp off ORT's kernel (torch's exact ``sigmoid`` vs MLAS's rational
approximation, a mean summed in another order, batch norm folded in another order) moves the scale,
then every element near a rounding boundary, and the argmax of deep networks follows (efficientnet_b0
int8-dynamic: 37/64).  The tiny CNN here has each such float op between dynamically quantised convs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from advaudit.models.convert import to_torch
from advaudit.models.convert.mlas import (
    EigenBatchNorm,
    MlasAveragePool,
    mlas_global_average,
    mlas_logistic,
    nchwc_block_size,
)


def _ort(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray], optimise: bool = True) -> np.ndarray:
    """ONNX Runtime's output with the default (full) graph optimisations, as advaudit runs it, or none."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _single_op(op: str, shape: list, **attrs: object) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], **attrs)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_logistic_is_ort_sigmoid_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 4, 20000), [0.0, 17.9, 18.0, 18.1, -18.1, 60.0, -60.0]]).astype(np.float32)
    ref = _ort(_single_op("Sigmoid", [None]), {"x": x})
    np.testing.assert_array_equal(mlas_logistic(torch.from_numpy(x)).numpy(), ref)


@pytest.mark.parametrize("size", [(7, 7), (5, 6), (28, 28)])
def test_global_average_is_ort_bit_for_bit(size: tuple[int, int]) -> None:
    x = np.random.default_rng(1).normal(0.5, 3, (2, 5, *size)).astype(np.float32)
    ref = _ort(_single_op("GlobalAveragePool", [None, 5, *size]), {"x": x})
    np.testing.assert_array_equal(mlas_global_average(torch.from_numpy(x)).numpy(), ref)


@pytest.fixture(scope="module")
def dynamic_silu_se(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``x -> SiLU -> Conv 1x1 -> GlobalAveragePool -> Conv 1x1``, dynamically quantised: the
    pattern where the unfixed twin (torch.sigmoid, torch's mean) left ORT (5 of 8 seeds differ)."""
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.3, (16, 16, 1, 1)).astype(np.float32) for _ in range(2)]
    inits = [numpy_helper.from_array(w, name) for w, name in zip(weights, ("w1", "w2"))]
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Mul", ["x", "s"], ["a"]),
        helper.make_node("Conv", ["a", "w1"], ["c"]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Conv", ["g", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "silu_se",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    folder = tmp_path_factory.mktemp("silu")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(folder / "f.onnx"))
    quantize_dynamic(str(folder / "f.onnx"), str(folder / "q.onnx"), weight_type=QuantType.QInt8, reduce_range=True)
    return folder / "q.onnx"


def test_dynamic_silu_se_twin_equals_ort_bit_for_bit(dynamic_silu_se: Path) -> None:
    torch.set_num_threads(1)
    twin = next(t for t in to_torch(onnx.load(str(dynamic_silu_se))) if not isinstance(t, Exception)).module
    for seed in range(8):
        x = np.random.default_rng(seed).normal(0, 2, (2, 16, 32, 32)).astype(np.float32)
        with torch.no_grad():
            out = twin(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(out, _ort(dynamic_silu_se, {"x": x}), err_msg=f"seed {seed}")


@pytest.mark.parametrize("optimise", [False, True])
@pytest.mark.parametrize("pool", [((2, 2), (2, 2), (0, 0, 0, 0), 0), ((3, 3), (1, 1), (1, 1, 1, 1), 0),
                                  ((3, 3), (2, 2), (1, 1, 1, 1), 1)])
def test_average_pool_and_batch_norm_after_it_are_ort_bit_for_bit(pool: tuple, optimise: bool) -> None:
    """Plain session: MLAS's column-wise vector kernel and Eigen's batch norm; default session (on
    AVX2/AVX-512 CPUs, 32 channels): the NCHWc pooling kernel and the batch norm folded into an NCHWc conv."""
    kernel, strides, pads, include = pool
    rng = np.random.default_rng(4)
    stats = [rng.normal(1, 0.3, 32), rng.normal(0, 0.3, 32), rng.normal(0, 0.3, 32), rng.uniform(0.5, 2, 32)]
    stats = [a.astype(np.float32) for a in stats]
    nodes = [
        helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=list(kernel), strides=list(strides),
                         pads=list(pads), count_include_pad=include),
        helper.make_node("BatchNormalization", ["p", "g", "b", "m", "v"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "pool_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32, 11, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for a, n in zip(stats, "gbmv")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.normal(0, 2, (2, 32, 11, 11)).astype(np.float32)
    nchwc = optimise and nchwc_block_size() > 0
    pooled = MlasAveragePool(kernel, strides, (pads[0], pads[1], pads[2], pads[3]), bool(include), nchwc)
    norm = EigenBatchNorm(*stats, 1e-5, nchwc)
    with torch.no_grad():
        out = norm(pooled(torch.from_numpy(x))).numpy()
    np.testing.assert_array_equal(out, _ort(model, {"x": x}, optimise))


def _tiny_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv -> SiLU -> squeeze-excite (GlobalAveragePool, Conv, Sigmoid, Mul) -> Concat -> BatchNorm
    -> Relu -> AveragePool 2x2 -> BatchNorm -> Conv -> GlobalAveragePool -> MatMul: the float ops of
    efficientnet/regnet/densenet between the integer convs of ``quantize_dynamic`` (16 channels at the
    pool: ORT's default session runs it and the batch norm after it as NCHWc ops on AVX2/AVX-512)."""
    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int, scale: float = 0.3, offset: float = 0.0) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.normal(offset, scale, shape)).astype(np.float32), name)

    inits = [
        init("w1", 8, 3, 3, 3), init("b1", 8),
        init("wr", 4, 8, 1, 1), init("br", 4),
        init("we", 8, 4, 1, 1), init("be", 8),
        init("gamma", 16, offset=1.0), init("beta", 16), init("mean", 16),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, 16).astype(np.float32), "var"),
        init("gamma2", 16, offset=1.0), init("beta2", 16), init("mean2", 16),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, 16).astype(np.float32), "var2"),
        init("w2", 8, 16, 3, 3, scale=0.1), init("b2", 8),
        init("wfc", 8, 10),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"]),
        helper.make_node("Mul", ["c1", "s1"], ["a1"]),
        helper.make_node("GlobalAveragePool", ["a1"], ["g1"]),
        helper.make_node("Conv", ["g1", "wr", "br"], ["r1"]),
        helper.make_node("Sigmoid", ["r1"], ["r2"]),
        helper.make_node("Conv", ["r2", "we", "be"], ["e1"]),
        helper.make_node("Sigmoid", ["e1"], ["e2"]),
        helper.make_node("Mul", ["a1", "e2"], ["se"]),
        helper.make_node("Concat", ["se", "a1"], ["cat"], axis=1),
        helper.make_node("BatchNormalization", ["cat", "gamma", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["relu"]),
        helper.make_node("AveragePool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["pool", "gamma2", "beta2", "mean2", "var2"], ["bn2"]),
        helper.make_node("Conv", ["bn2", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g2"]),
        helper.make_node("Flatten", ["g2"], ["flat"]),
        helper.make_node("MatMul", ["flat", "wfc"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 30, 30])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def dynamic_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlas")
    onnx.save(_tiny_cnn(), str(folder / "float.onnx"))
    quantize_dynamic(str(folder / "float.onnx"), str(folder / "dynamic.onnx"), weight_type=QuantType.QInt8,
                     extra_options={"ActivationSymmetric": False}, reduce_range=True)
    return folder / "dynamic.onnx"


def test_dynamic_quantised_cnn_twin_equals_ort_bit_for_bit(dynamic_cnn: Path) -> None:
    torch.set_num_threads(1)
    twin = next(t for t in to_torch(onnx.load(str(dynamic_cnn))) if not isinstance(t, Exception))
    assert "DynamicQuantizeLinear" in twin.straight_through
    x = np.random.default_rng(2).normal(0, 1, (16, 3, 30, 30)).astype(np.float32)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        out = twin.module(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(out, _ort(dynamic_cnn, {"x": x}))


def test_dynamic_quantised_cnn_twin_has_input_gradient(dynamic_cnn: Path) -> None:
    twin = next(t for t in to_torch(onnx.load(str(dynamic_cnn))) if not isinstance(t, Exception))
    x = torch.from_numpy(np.random.default_rng(3).normal(0, 1, (2, 3, 30, 30)).astype(np.float32)).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        twin.module(x)[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_float_graphs_keep_onnx2torch_modules() -> None:
    model = _single_op("Sigmoid", [None, 4])
    twin = next(t for t in to_torch(model) if not isinstance(t, Exception))
    names = {type(m).__name__ for m in twin.module.modules()}
    assert "MlasSigmoid" not in names
