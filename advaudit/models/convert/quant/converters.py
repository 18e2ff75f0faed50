"""onnx2torch converters for the quantised operators, and their registration.

Conversion-time helpers read constants, element types and ranks from onnx2torch's graph; each
converter binds a node's constant inputs as buffers of the module it builds and records the type and
rank of its outputs where onnx's shape inference could not.  :func:`register` installs them all.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from onnx import NodeProto, TensorProto, helper, numpy_helper
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnx2torch.onnx_graph import OnnxGraph, ValueType
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from ..ste import install, is_ours, schema_versions
from .catalog import (
    DYNAMIC_WEIGHT_OPS,
    FLOAT_TYPES,
    MS_DOMAIN,
    QRANGE,
    QUANT_OP_DOMAINS,
    RANK_FROM_KERNEL_OPS,
    STRAIGHT_THROUGH_QUANT_OPS,
    WIDE_INTEGERS,
)
from .contrib import (
    PoolSpec,
    QGemm,
    QLinearAdd,
    QLinearAveragePool,
    QLinearConcat,
    QLinearGlobalAveragePool,
    QLinearLookup,
    QLinearMul,
)
from .modules import (
    ConvInteger,
    DequantizeLinear,
    DynamicQuantizeLinear,
    DynamicWeightConv,
    MatMulInteger,
    Operands,
    QLinearConv,
    QLinearMatMul,
    QuantizeLinear,
)
from .numerics import ConvSpec


def _constant_proto(name: str, graph: OnnxGraph) -> Optional[TensorProto]:
    """The tensor behind ``name`` if it is an initializer or a ``Constant`` node's output."""
    if name in graph.initializers:
        return graph.initializers[name].proto
    if graph.value_type(name) != ValueType.NODE_OUTPUT:
        return None
    node, _ = graph.value_as_node_output(name)
    if node.operation_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for attr in node.proto.attribute:
        if attr.name == "value":
            return attr.t
        if attr.name in ("value_float", "value_floats"):
            values = attr.f if attr.name == "value_float" else attr.floats
            return numpy_helper.from_array(np.asarray(values, np.float32))
        if attr.name in ("value_int", "value_ints"):
            values = attr.i if attr.name == "value_int" else attr.ints
            return numpy_helper.from_array(np.asarray(values, np.int64))
    return None


def _buffer(proto: TensorProto) -> torch.Tensor:
    """A constant as a torch buffer: integers as int32 (int64 when wider), floats as float32
    (float64 kept), so that ``module.float()``/``.half()`` leave integer constants exact."""
    array = numpy_helper.to_array(proto)
    if proto.data_type in QRANGE or proto.data_type in (TensorProto.BOOL,):
        return torch.from_numpy(np.ascontiguousarray(array.astype(np.int32)))
    if proto.data_type in WIDE_INTEGERS:
        return torch.from_numpy(np.ascontiguousarray(array.astype(np.int64)))
    if proto.data_type in FLOAT_TYPES:
        dtype = np.float64 if proto.data_type == TensorProto.DOUBLE else np.float32
        return torch.from_numpy(np.ascontiguousarray(array.astype(dtype)))
    raise NotImplementedError(f"constant {proto.name!r} of ONNX type {proto.data_type} is not supported")


def bind(node: OnnxNode, graph: OnnxGraph) -> tuple[Operands, tuple[str, ...]]:
    """Split a node's inputs into constants (buffers) and run-time inputs (their names returned)."""
    slots, constants, runtime = [], {}, []
    for index, name in enumerate(node.input_values):
        proto = _constant_proto(name, graph) if name else None
        if not name:
            slots.append("")
        elif proto is not None:
            slots.append("c")
            constants[index] = _buffer(proto)
        else:
            slots.append("r")
            runtime.append(name)
    return Operands(tuple(slots), constants), tuple(runtime)


def _elem_type(name: str, graph: OnnxGraph) -> Optional[int]:
    """ONNX element type of a value, if known (constant, or typed by shape inference)."""
    if not name:
        return None
    proto = _constant_proto(name, graph)
    if proto is not None:
        return proto.data_type
    info = graph.value_info.get(name)
    if info is not None and info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
        return info.type.tensor_type.elem_type
    return None


def _rank(name: str, graph: OnnxGraph) -> Optional[int]:
    """Rank of a value, if shape inference (or :func:`_note_outputs`) recorded its shape."""
    proto = _constant_proto(name, graph) if name else None
    if proto is not None:
        return len(proto.dims)
    info = graph.value_info.get(name) if name else None
    if info is None or not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
        return None
    return len(info.type.tensor_type.shape.dim)


def _input(node: OnnxNode, index: int) -> str:
    return node.input_values[index] if index < len(node.input_values) else ""


def qtype_of(node: OnnxNode, graph: OnnxGraph, zp_index: int, fallback: Sequence[int] = ()) -> int:
    """ONNX element type of a node's quantised output: the type of its zero point input, else its
    ``output_dtype`` attribute, else its inferred output type, else that of the given fallback
    inputs, else uint8 (ONNX's default)."""
    declared = [_elem_type(_input(node, zp_index), graph), node.attributes.get("output_dtype") or None]
    for onnx_type in declared:
        if onnx_type is not None and onnx_type not in QRANGE:
            raise NotImplementedError(f"{node.operation_type} to ONNX type {onnx_type} is not implemented")
    inferred = [_elem_type(node.output_values[0], graph), *(_elem_type(_input(node, i), graph) for i in fallback)]
    return next((int(t) for t in [*declared, *inferred] if t is not None and t in QRANGE), int(TensorProto.UINT8))


def qrange_of(node: OnnxNode, graph: OnnxGraph, zp_index: int, fallback: Sequence[int] = ()) -> tuple[int, int]:
    """Saturation range of :func:`qtype_of`."""
    return QRANGE[qtype_of(node, graph, zp_index, fallback)]


# ----------------------------------------------------------------------------------------------
# Converters
# ----------------------------------------------------------------------------------------------

Builder = Callable[[OnnxNode, OnnxGraph, Operands], nn.Module]
_QTYPE_OF_RANGE: Mapping[tuple[int, int], int] = {qrange: onnx_type for onnx_type, qrange in QRANGE.items()}


def _output_types(node: OnnxNode, module: nn.Module) -> tuple[int, ...]:
    """ONNX element types of a converted node's outputs."""
    if isinstance(module, DynamicQuantizeLinear):
        return TensorProto.UINT8, TensorProto.FLOAT, TensorProto.UINT8
    if isinstance(module, (ConvInteger, MatMulInteger)):
        return (TensorProto.INT32,)
    if isinstance(module, QGemm) and not _input(node, 7):
        return (TensorProto.FLOAT,)
    qrange = getattr(module, "qrange", None)
    return (TensorProto.FLOAT,) if qrange is None else (_QTYPE_OF_RANGE[qrange],)


def _note_outputs(node: OnnxNode, graph: OnnxGraph, types: Sequence[int], data_inputs: Sequence[int]) -> None:
    """Record type and rank of a node's outputs in onnx2torch's graph where shape inference could
    not (inputs made by com.microsoft ops): onnx2torch's ``MaxPool``, ``AveragePool``, ... converters
    read the input rank from there.  The first output gets the largest rank of ``data_inputs``,
    further outputs are scalars."""
    ranks = [r for r in (_rank(_input(node, i), graph) for i in data_inputs) if r is not None]
    for index, name in enumerate(node.output_values):
        rank = (max(ranks) if ranks else None) if index == 0 else 0
        if name and name not in graph.value_info and rank is not None:
            elem = types[min(index, len(types) - 1)]
            graph.value_info[name] = helper.make_tensor_value_info(name, elem, [None] * rank)


def _converter(build: Builder, data_inputs: Sequence[int]) -> Callable[[OnnxNode, OnnxGraph], OperationConverterResult]:
    """An onnx2torch converter that maps only the run-time inputs to the module built by ``build``."""

    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        operands, runtime = bind(node, graph)
        module = build(node, graph, operands)
        _note_outputs(node, graph, _output_types(node, module), data_inputs)
        return OperationConverterResult(module, OnnxMapping(inputs=runtime, outputs=node.output_values))

    return convert


def _build_quantize(node: OnnxNode, graph: OnnxGraph, operands: Operands) -> nn.Module:
    attrs = node.attributes
    return QuantizeLinear(
        operands, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)), qrange_of(node, graph, 2)
    )


def _build_dequantize(node: OnnxNode, graph: OnnxGraph, operands: Operands) -> nn.Module:  # noqa: ARG001
    attrs = node.attributes
    out_dtype = FLOAT_TYPES.get(attrs.get("output_dtype", 0))
    return DequantizeLinear(operands, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)), out_dtype)


def _build_lookup(node: OnnxNode, graph: OnnxGraph, operands: Operands) -> nn.Module:
    alpha = float(node.attributes.get("alpha", 0.01))
    return QLinearLookup(operands, node.operation_type, alpha, qrange_of(node, graph, 4, (2, 0)))


def _build_qgemm(node: OnnxNode, graph: OnnxGraph, operands: Operands) -> nn.Module:
    attrs = node.attributes
    return QGemm(
        operands,
        float(attrs.get("alpha", 1.0)),
        bool(attrs.get("transA", 0)),
        bool(attrs.get("transB", 0)),
        qrange_of(node, graph, 8, (2, 0)),
    )


def _build_concat(node: OnnxNode, graph: OnnxGraph, operands: Operands) -> nn.Module:
    return QLinearConcat(operands, int(node.attributes.get("axis", 1)), qrange_of(node, graph, 1, (4, 2)))


# (domain, op_type) -> (module builder, the inputs whose rank is the output's)
_BUILDERS: Mapping[tuple[str, str], tuple[Builder, tuple[int, ...]]] = {
    ("", "QuantizeLinear"): (_build_quantize, (0,)),
    (MS_DOMAIN, "QuantizeLinear"): (_build_quantize, (0,)),
    ("", "DequantizeLinear"): (_build_dequantize, (0,)),
    (MS_DOMAIN, "DequantizeLinear"): (_build_dequantize, (0,)),
    ("", "DynamicQuantizeLinear"): (lambda node, graph, operands: DynamicQuantizeLinear(operands), (0,)),
    ("", "ConvInteger"): (lambda node, graph, operands: ConvInteger(operands, ConvSpec.from_node(node)), (0,)),
    ("", "MatMulInteger"): (lambda node, graph, operands: MatMulInteger(operands), (0, 1)),
    ("", "QLinearConv"): (
        lambda node, graph, operands: QLinearConv(
            operands, ConvSpec.from_node(node), qrange_of(node, graph, 7, (2, 0))
        ),
        (0,),
    ),
    ("", "QLinearMatMul"): (
        lambda node, graph, operands: QLinearMatMul(operands, qrange_of(node, graph, 7, (2, 0))),
        (0, 3),
    ),
    (MS_DOMAIN, "QGemm"): (_build_qgemm, (0,)),
    (MS_DOMAIN, "QLinearAdd"): (
        lambda node, graph, operands: QLinearAdd(operands, qrange_of(node, graph, 7, (2, 0))),
        (0, 3),
    ),
    (MS_DOMAIN, "QLinearMul"): (
        lambda node, graph, operands: QLinearMul(operands, qrange_of(node, graph, 7, (2, 0))),
        (0, 3),
    ),
    (MS_DOMAIN, "QLinearGlobalAveragePool"): (
        lambda node, graph, operands: QLinearGlobalAveragePool(
            operands, bool(node.attributes.get("channels_last", 0)), qrange_of(node, graph, 4, (2, 0))
        ),
        (0,),
    ),
    (MS_DOMAIN, "QLinearAveragePool"): (
        lambda node, graph, operands: QLinearAveragePool(
            operands,
            PoolSpec.from_node(node),
            bool(node.attributes.get("channels_last", 0)),
            qrange_of(node, graph, 4, (2, 0)),
        ),
        (0,),
    ),
    (MS_DOMAIN, "QLinearConcat"): (_build_concat, (2,)),
    (MS_DOMAIN, "QLinearSigmoid"): (_build_lookup, (0,)),
    (MS_DOMAIN, "QLinearLeakyRelu"): (_build_lookup, (0,)),
}
assert set(_BUILDERS) == set(QUANT_OP_DOMAINS)

# onnx2torch's own converters of the ops wrapped here, by registry key.
_ORIGINALS: dict[OperationDescription, Callable] = {}


def _convert_conv(node: OnnxNode, graph: OnnxGraph, original: Optional[Callable]) -> OperationConverterResult:
    """onnx2torch's converter when weight and bias are initializers, else :class:`DynamicWeightConv`."""
    inputs = [name for name in node.input_values[1:] if name]
    if original is not None and all(name in graph.initializers for name in inputs):
        return original(node, graph)

    def build(node: OnnxNode, graph: OnnxGraph, operands: Operands) -> nn.Module:  # noqa: ARG001
        return DynamicWeightConv(operands, ConvSpec.from_node(node), node.operation_type == "ConvTranspose")

    return _converter(build, (0,))(node, graph)


def _convert_pool(node: OnnxNode, graph: OnnxGraph, original: Callable) -> OperationConverterResult:
    """onnx2torch's ``MaxPool``/``AveragePool`` converter, given the input rank (from
    ``kernel_shape``) where shape inference could not type the input (QOperator graphs)."""
    name = node.input_values[0]
    kernel = node.attributes.get("kernel_shape")
    if _rank(name, graph) is None and kernel:
        elem = _elem_type(name, graph) or TensorProto.UNDEFINED
        graph.value_info[name] = helper.make_tensor_value_info(name, elem, [None] * (2 + len(kernel)))
    result = original(node, graph)
    _note_outputs(node, graph, (_elem_type(name, graph) or TensorProto.UNDEFINED,), (0,))
    return result


def _wrap_originals(op_type: str, wrapper: Callable, without_original: bool) -> None:
    """Install ``wrapper(node, graph, original=...)`` for every schema version of ``op_type`` that
    onnx2torch converts (and, if ``without_original``, for the versions it does not)."""
    for version in schema_versions(op_type):
        key = OperationDescription(domain="", operation_type=op_type, version=version)
        current = _CONVERTER_REGISTRY.get(key)
        if current is not None and not is_ours(current):
            _ORIGINALS[key] = current
        if key in _ORIGINALS or without_original:
            install(op_type, [version], functools.partial(wrapper, original=_ORIGINALS.get(key)))


def _dotless_node_name(node: NodeProto) -> str:
    """onnx2torch's module name for a node with the dots of the domain replaced too."""
    return _ONNX2TORCH_NODE_NAME(node).replace(".", "/")


_ONNX2TORCH_NODE_NAME: Callable[[NodeProto], str] = OnnxGraph.generate_node_name


def _patch_node_names() -> None:
    """onnx2torch names a node's module ``<domain>/<name>`` and torch refuses the dot of
    ``com.microsoft``; make the names dotless (idempotent)."""
    OnnxGraph.generate_node_name = staticmethod(_dotless_node_name)


def register() -> None:
    """Install the converters of :data:`QUANT_OP_DOMAINS` for every opset version of their schemas
    (version 1 for com.microsoft), the dynamic-weight ``Conv``/``ConvTranspose`` and the
    rank-from-kernel ``MaxPool``/``AveragePool`` wrappers (idempotent).

    Also makes onnx2torch's module names dotless, which com.microsoft nodes need.
    """
    _patch_node_names()
    for (domain, op_type), (build, data_inputs) in _BUILDERS.items():
        versions = schema_versions(op_type) if domain == "" else [1]
        install(op_type, versions, _converter(build, data_inputs), domain=domain)
    for op_type in DYNAMIC_WEIGHT_OPS:
        _wrap_originals(op_type, _convert_conv, without_original=True)
    for op_type in RANK_FROM_KERNEL_OPS:
        _wrap_originals(op_type, _convert_pool, without_original=False)


def is_straight_through_quant_node(node: NodeProto) -> bool:
    """Whether a node is a quantised op that rounds (:data:`STRAIGHT_THROUGH_QUANT_OPS`); a
    ``QGemm`` without output scale is an exact linear map and does not count."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    if (domain, node.op_type) not in QUANT_OP_DOMAINS or node.op_type not in STRAIGHT_THROUGH_QUANT_OPS:
        return False
    return node.op_type != "QGemm" or (len(node.input) > 7 and bool(node.input[7]))
