"""Operator versions of opsets 18-22 (what the dynamo exporter writes) convert and match ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from advaudit.models.convert import to_torch


def _model(nodes, inputs, outputs, inits=(), opset=20):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _first_twin(model):
    errors = []
    for twin in to_torch(model):
        if isinstance(twin, Exception):
            errors.append(twin)
            continue
        return twin
    raise AssertionError(f"no candidate converted: {errors}")


def _compare(model, x: np.ndarray, n_outputs: int = 1) -> None:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})
    twin = _first_twin(model)
    with torch.no_grad():
        got = twin.module(torch.from_numpy(x))
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    assert len(got) == n_outputs
    for g, w in zip(got, want):
        assert tuple(g.shape) == w.shape
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-5)


X = np.random.default_rng(0).normal(size=(2, 3, 5, 7)).astype(np.float32)


def _io(shape_out, n_out=1):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X.shape))
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(n_out)]
    return [x], outs


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL2", "ReduceProd"])
@pytest.mark.parametrize(("axes", "keepdims"), [([2, 3], 1), ([-1], 0), ([1, 3], 0)])
def test_reduce_18_with_axes_input(op, axes, keepdims):
    inputs, outputs = _io(None)
    node = helper.make_node(op, ["x", "axes"], ["y0"], keepdims=keepdims)
    axes_init = numpy_helper.from_array(np.array(axes, np.int64), "axes")
    _compare(_model([node], inputs, outputs, [axes_init], opset=18), X)


def test_reduce_18_without_axes_reduces_all_or_nothing():
    inputs, outputs = _io(None)
    _compare(_model([helper.make_node("ReduceMean", ["x"], ["y0"], keepdims=1)], inputs, outputs, opset=18), X)
    node = helper.make_node("ReduceMean", ["x"], ["y0"], keepdims=1, noop_with_empty_axes=1)
    _compare(_model([node], inputs, outputs, opset=18), X)


@pytest.mark.parametrize(("axis", "n"), [(3, 3), (3, 2), (1, 3), (2, 2)])
def test_split_18_num_outputs_uneven(axis, n):
    inputs, outputs = _io(None, n)
    node = helper.make_node("Split", ["x"], [f"y{i}" for i in range(n)], axis=axis, num_outputs=n)
    _compare(_model([node], inputs, outputs, opset=18), X, n_outputs=n)


def test_split_18_with_sizes():
    inputs, outputs = _io(None, 2)
    sizes = numpy_helper.from_array(np.array([2, 5], np.int64), "s")
    node = helper.make_node("Split", ["x", "s"], ["y0", "y1"], axis=3)
    _compare(_model([node], inputs, outputs, [sizes], opset=18), X, n_outputs=2)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_20(approximate):
    inputs, outputs = _io(None)
    node = helper.make_node("Gelu", ["x"], ["y0"], approximate=approximate)
    _compare(_model([node], inputs, outputs, opset=20), X * 3)


def test_reshape_allowzero_and_newer_type_only_versions():
    inputs, outputs = _io(None)
    shape = numpy_helper.from_array(np.array([2, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"], allowzero=1),
        helper.make_node("Shape", ["r"], ["s"], start=1),  # Shape-19/21
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("Identity", ["r"], ["i"]),
        helper.make_node("Equal", ["r", "r"], ["eq"]),
        helper.make_node("Cast", ["eq"], ["eqf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["i", "eqf"], ["y0"]),
    ]
    model = _model(nodes, inputs, outputs, [shape], opset=21)
    _compare(model, X)


def test_average_pool_19_and_pad_19_convert():
    inputs, outputs = _io(None)
    pads = numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64), "pads")
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
        helper.make_node("AveragePool", ["p"], ["y0"], kernel_shape=[3, 3], strides=[1, 2]),
    ]
    _compare(_model(nodes, inputs, outputs, [pads], opset=19), X)


def test_a_new_feature_the_old_converter_lacks_is_refused_clearly():
    inputs, outputs = _io(None)
    node = helper.make_node("AveragePool", ["x"], ["y0"], kernel_shape=[2, 2], dilations=[2, 2])
    model = _model([node], inputs, outputs, opset=19)
    errors = [t for t in to_torch(model) if isinstance(t, Exception)]
    assert errors and all("dilations" in str(e) for e in errors)


def test_gradients_flow_through_the_new_converters():
    inputs, outputs = _io(None)
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [
        helper.make_node("Gelu", ["x"], ["g"]),
        helper.make_node("ReduceMean", ["g", "axes"], ["y0"], keepdims=0),
    ]
    twin = _first_twin(_model(nodes, inputs, outputs, [axes], opset=20))
    x = torch.from_numpy(X).requires_grad_(True)
    twin.module(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
