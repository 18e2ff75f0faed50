"""Straight-through (BPDA) converters for ONNX's piecewise-constant operators.

onnx2torch converts ``Round``, ``Floor``, ``Ceil`` and ``Sign`` to the torch functions of the same
name, whose gradient is zero almost everywhere, and ``Cast`` to ``Tensor.to``, which cuts the graph
when the target is an integer type.  A gradient attack on a model that quantises its input
(``x -> Mul 255 -> Cast(uint8) -> Cast(float) -> Div 255``, ``x -> Mul 7 -> Round -> Div 7``) then
sees no gradient at all.  The converters here keep the forward pass bit for bit and replace the
backward pass by the identity (Athalye et al.'s BPDA), the standard way to attack such a model.

``Cast`` from a floating tensor to an integer type is straight-through only where its result can
stay a float tensor holding the integer values, i.e. where every consumer of the result is a
``Cast``, a quantised operator of :mod:`.quant` (which accept integer-valued float tensors) or a
layout-only operator (``Reshape``, ``Transpose``, ...) whose own consumers qualify.  Every other
integer ``Cast`` (shape arithmetic, indices, graph outputs) still produces a real integer tensor.

:func:`register` installs the converters (idempotent); :func:`straight_through_ops` names the op
types of a graph whose gradient is straight-through, so that reports can say so.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Iterable, Mapping, Optional

import onnx
import torch
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, defs
from onnx2torch.node_converters.cast import TENSOR_TYPE_TO_TORCH_TYPE
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

__all__ = [
    "STRAIGHT_THROUGH_OPS",
    "StraightThroughCast",
    "StraightThroughFunction",
    "StraightThroughRounding",
    "install",
    "is_ours",
    "may_stay_float",
    "register",
    "schema_versions",
    "straight_through",
    "straight_through_ops",
    "value_uses",
]

#: Op types whose converters :func:`register` replaces by straight-through versions.
STRAIGHT_THROUGH_OPS: tuple[str, ...] = ("Round", "Floor", "Ceil", "Sign", "Cast")

_ONNX_DOMAINS = ("", "ai.onnx")
_ROUNDINGS: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Round": torch.round,  # half to even, as ONNX
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Sign": torch.sign,
}
# Ops that only move values around: an integer-valued float tensor passes through them unchanged.
_LAYOUT_OPS = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})
_TORCH_TYPES: Mapping[int, torch.dtype] = {**TENSOR_TYPE_TO_TORCH_TYPE, int(TensorProto.BFLOAT16): torch.bfloat16}
_INTEGER_DTYPES = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})
_FLOAT_ELEM_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
)
_MARK = "_advaudit_converter"


# ----------------------------------------------------------------------------------------------
# The straight-through primitive
# ----------------------------------------------------------------------------------------------


def _sum_to_shape(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``grad`` summed over the dimensions that broadcasting added to a tensor of ``shape``."""
    if grad.shape == shape:
        return grad
    lead = grad.dim() - len(shape)
    grad = grad.sum(dim=tuple(range(lead))) if lead > 0 else grad
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class StraightThroughFunction(torch.autograd.Function):
    """Forward: ``value`` (computed by the caller without gradient).  Backward: the incoming
    gradient times ``gain`` (``None`` for the identity), routed to ``source``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(source: torch.Tensor, value: torch.Tensor, gain: Optional[torch.Tensor]) -> torch.Tensor:
        """Return a copy of ``value`` (a copy, so that in-place ops downstream stay legal)."""
        return value.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:  # ctx: attributes set here
        """Keep what backward needs: the gain and the source's shape and dtype."""
        source, _, gain = inputs
        ctx.source_shape = source.shape
        ctx.source_dtype = source.dtype
        ctx.has_gain = gain is not None
        if gain is not None:
            ctx.save_for_backward(gain)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        """``grad * gain`` reduced to the source's shape; nothing flows to value or gain."""
        if ctx.has_gain:
            (gain,) = ctx.saved_tensors
            grad = grad * gain
        return _sum_to_shape(grad, ctx.source_shape).to(ctx.source_dtype), None, None


def straight_through(source: torch.Tensor, value: torch.Tensor, gain: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``value`` in the forward pass; in the backward pass the gradient w.r.t. ``source`` is the
    incoming gradient times ``gain`` (identity when ``gain`` is None).

    ``value`` must have ``source``'s shape or a shape ``source`` broadcasts to, and ``gain`` a shape
    that broadcasts to ``value``'s.  Unlike ``source + (value - source).detach()`` the forward value
    is exact (no rounding error, no NaN for infinite inputs).
    """
    if not source.requires_grad:
        return value.detach()
    return StraightThroughFunction.apply(source, value.detach(), None if gain is None else gain.detach())


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class StraightThroughRounding(nn.Module, OnnxToTorchModule):
    """``Round``/``Floor``/``Ceil``/``Sign`` with the forward of onnx2torch and identity backward."""

    def __init__(self, op_type: str) -> None:
        super().__init__()
        self.op_type = op_type

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """The rounded values; gradient passes through unchanged."""
        value = _ROUNDINGS[self.op_type](input_tensor.detach())
        if not input_tensor.is_floating_point():
            return value
        return straight_through(input_tensor, value)

    def extra_repr(self) -> str:
        """Show which rounding this is."""
        return self.op_type


class StraightThroughCast(nn.Module, OnnxToTorchModule):
    """ONNX ``Cast``.  With ``float_ok`` set (decided at conversion time from the consumers), a
    floating input cast to an integer type yields the cast values *as a float tensor* with identity
    gradient; otherwise the result is what onnx2torch gives (``Tensor.to``)."""

    def __init__(self, onnx_dtype: int, float_ok: bool) -> None:
        super().__init__()
        try:
            self.torch_dtype = _TORCH_TYPES[onnx_dtype]
        except KeyError as exc:
            raise NotImplementedError(f'Conversion to "{onnx_dtype}" is not implemented') from exc
        self.float_ok = float_ok and self.torch_dtype in _INTEGER_DTYPES

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """Cast as ONNX does (truncation toward zero for float -> int)."""
        if not (self.float_ok and input_tensor.is_floating_point()):
            return input_tensor.to(self.torch_dtype)
        value = input_tensor.detach().to(self.torch_dtype).to(input_tensor.dtype)
        return straight_through(input_tensor, value)

    def extra_repr(self) -> str:
        """Show the target type and whether the cast is straight-through."""
        return f"to={self.torch_dtype}, straight_through={self.float_ok}"


# ----------------------------------------------------------------------------------------------
# Which integer casts may stay float
# ----------------------------------------------------------------------------------------------


def _domain(node: NodeProto) -> str:
    return "" if node.domain in _ONNX_DOMAINS else node.domain


def _integer_consumers() -> frozenset[tuple[str, str]]:
    """``(domain, op_type)`` of ops that accept an integer tensor represented as float values."""
    from .quant import QUANT_OP_DOMAINS  # late import: quant imports this module

    return frozenset({("", "Cast"), *QUANT_OP_DOMAINS})


def value_uses(graph: GraphProto) -> dict[str, list[tuple[NodeProto, int]]]:
    """For each value name, the ``(node, input index)`` pairs that read it (top-level graph)."""
    uses: dict[str, list[tuple[NodeProto, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name:
                uses.setdefault(name, []).append((node, index))
    return uses


def may_stay_float(name: str, uses: Mapping[str, list[tuple[NodeProto, int]]], outputs: Iterable[str]) -> bool:
    """Whether an integer value ``name`` may be represented by a float tensor in the twin: it is
    no graph output, and every reader is a :func:`_integer_consumers` op, or a layout op reading
    it as data whose results qualify in turn."""
    outputs = frozenset(outputs)
    consumers = _integer_consumers()
    pending, seen = [name], set()
    while pending:
        value = pending.pop()
        if value in outputs:
            return False
        seen.add(value)
        for node, index in uses.get(value, ()):
            if (_domain(node), node.op_type) in consumers:
                continue
            if _domain(node) == "" and node.op_type in _LAYOUT_OPS and index == 0:
                pending.extend(out for out in node.output if out and out not in seen)
                continue
            return False
    return True


_USES: "weakref.WeakKeyDictionary[OnnxGraph, dict]" = weakref.WeakKeyDictionary()


def _graph_uses(graph: OnnxGraph) -> dict[str, list[tuple[NodeProto, int]]]:
    """:func:`value_uses` of an onnx2torch graph, computed once per graph."""
    if graph not in _USES:
        _USES[graph] = value_uses(graph.proto)
    return _USES[graph]


def _cast_target(node: NodeProto) -> Optional[int]:
    return next((attr.i for attr in node.attribute if attr.name == "to"), None)


def _is_integer_type(onnx_type: Optional[int]) -> bool:
    return onnx_type is not None and _TORCH_TYPES.get(onnx_type) in _INTEGER_DTYPES


# ----------------------------------------------------------------------------------------------
# Converters and registration
# ----------------------------------------------------------------------------------------------


def _convert_rounding(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    return OperationConverterResult(StraightThroughRounding(node.operation_type), onnx_mapping_from_node(node))


def _convert_cast(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    onnx_dtype = node.attributes.get("to")
    float_ok = _is_integer_type(onnx_dtype) and all(
        may_stay_float(out, _graph_uses(graph), graph.output_values) for out in node.output_values
    )
    return OperationConverterResult(StraightThroughCast(onnx_dtype, float_ok), onnx_mapping_from_node(node))


def schema_versions(op_type: str, domain: str = "", since: int = 1) -> list[int]:
    """The ``since_version`` of every schema of ``op_type`` that the installed onnx knows."""
    return sorted(
        {s.since_version for s in defs.get_all_schemas_with_history() if s.name == op_type and s.domain == domain}
        - set(range(since))
    )


def install(op_type: str, versions: Iterable[int], converter: Callable, domain: str = "") -> None:
    """Write ``converter`` into onnx2torch's registry for each version, replacing what is there."""
    setattr(converter, _MARK, True)
    for version in versions:
        _CONVERTER_REGISTRY[OperationDescription(domain=domain, operation_type=op_type, version=version)] = converter


def is_ours(converter: object) -> bool:
    """Whether a registry entry was written by advaudit."""
    return bool(getattr(converter, _MARK, False))


def register() -> None:
    """Install the straight-through converters (idempotent; replaces onnx2torch's entries)."""
    for op_type in ("Round", "Floor", "Ceil", "Sign"):
        install(op_type, schema_versions(op_type, since=6), _convert_rounding)
    install("Cast", schema_versions("Cast", since=6), _convert_cast)


# ----------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------


def _elem_types(proto: ModelProto) -> dict[str, int]:
    """Element type of every value of the top-level graph that shape inference can type."""
    try:
        graph = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # inference fails on some graphs; fall back to what the file declares
        graph = proto.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    return types


def _floating(name: str, types: Mapping[str, int]) -> bool:
    """Whether ``name`` is floating point (or of unknown type: then the twin decides at run time)."""
    return types.get(name, TensorProto.FLOAT) in _FLOAT_ELEM_TYPES


def straight_through_ops(proto: ModelProto) -> list[str]:
    """Op types of ``proto``'s top-level graph whose twin gradient is straight-through, in graph
    order: the rounding ops of :data:`STRAIGHT_THROUGH_OPS` on floating inputs, float -> integer
    casts that :func:`register`'s converter keeps float, and the quantising ops of
    :data:`.quant.STRAIGHT_THROUGH_QUANT_OPS` (dequantisation and integer matmul/conv are linear and
    so not listed)."""
    from .quant import is_straight_through_quant_node  # late import: quant imports this module

    graph = proto.graph
    types = _elem_types(proto)
    uses = value_uses(graph)
    outputs = [o.name for o in graph.output]
    found: dict[str, None] = {}
    for node in graph.node:
        op = node.op_type
        if _domain(node) == "" and op in _ROUNDINGS:
            hit = _floating(node.input[0], types)
        elif _domain(node) == "" and op == "Cast":
            hit = (
                _is_integer_type(_cast_target(node))
                and _floating(node.input[0], types)
                and all(may_stay_float(out, uses, outputs) for out in node.output)
            )
        else:
            hit = is_straight_through_quant_node(node)
        if hit:
            found[op] = None
    return list(found)
