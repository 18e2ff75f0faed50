"""Converters for operator versions newer than onnx2torch knows (opsets 18-22).

``torch.onnx.export(..., dynamo=True)`` writes opset 18-20 graphs; onnx2torch 1.5 stops at the
opset-17 versions of most operators, so ``ReduceMean``-18 or ``Reshape``-19 fail to convert although
nothing the graph does is new.  ``onnx.version_converter`` cannot go down either (there is no
``Gelu`` before opset 20 and no adapter from ``Split``-18).  Most newer versions only add element
types or an attribute the exporters leave at its default; :func:`register` maps those to onnx2torch's
converter of the previous version after checking that the node uses nothing new
(:data:`NEW_FEATURES`), and converts the three that changed shape properly:

* ``Reduce*``-18: ``axes`` became an input (a constant in exported graphs);
* ``Split``-18: ``num_outputs`` instead of ``split`` sizes;
* ``Gelu``-20: a new operator (``approximate`` ``none`` or ``tanh``);
* ``Reshape`` with ``allowzero=1`` (the dynamo exporter sets it), which onnx2torch refuses.

A wrong mapping cannot go unnoticed: every twin is checked against ONNX Runtime before use.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OnnxToTorchModule,
    OperationConverterResult,
    get_const_value,
    onnx_mapping_from_node,
)
from torch import nn

from .ste import install, is_ours, schema_versions

__all__ = ["NEW_FEATURES", "register"]

REDUCE_OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
)

#: Per op: a check returning what a node uses that the previous version's converter cannot do
#: (None when nothing).  Ops not listed only gained element types.
NEW_FEATURES: dict[str, Callable[[OnnxNode], Optional[str]]] = {
    "AveragePool": lambda n: "dilations" if any(d != 1 for d in n.attributes.get("dilations", [1])) else None,
    "Pad": lambda n: (
        "mode wrap"
        if n.attributes.get("mode", "constant") == "wrap"
        else ("the axes input" if len(n.input_values) > 3 and n.input_values[3] else None)
    ),
    "ScatterND": lambda n: f"reduction {n.attributes['reduction']}"
    if n.attributes.get("reduction", "none") in ("max", "min")
    else None,
    "ScatterElements": lambda n: f"reduction {n.attributes['reduction']}"
    if n.attributes.get("reduction", "none") in ("max", "min")
    else None,
    "Resize": lambda n: next(
        (
            name
            for name, default in (("antialias", 0), ("axes", None), ("keep_aspect_ratio_policy", "stretch"))
            if n.attributes.get(name, default) != default
        ),
        None,
    ),
    "Shape": lambda n: None,
    # GroupNormalization-21 changed what scale and bias mean: never alias it.
    "GroupNormalization": lambda n: "opset-21 semantics",
}

#: The newest opset whose versions :func:`register` maps.
MAX_OPSET = 22


def _registered_before(op_type: str, version: int) -> Optional[Callable]:
    """onnx2torch's (or advaudit's) converter for the newest version of ``op_type`` below ``version``."""
    best = None
    for key, converter in _CONVERTER_REGISTRY.items():
        if key.domain == "" and key.operation_type == op_type and key.version < version:
            if best is None or key.version > best[0]:
                best = (key.version, converter)
    return None if best is None else best[1]


def _alias(op_type: str, previous: Callable) -> Callable:
    check = NEW_FEATURES.get(op_type)

    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        used = check(node) if check is not None else None
        if used:
            raise NotImplementedError(f"{op_type} with {used} (new in a later opset)")
        return previous(node, graph)

    return convert


# ---------------------------------------------------------------------------------- Reduce*-18


def _constant(name: str, graph: OnnxGraph) -> Optional[torch.Tensor]:
    """The value of a constant input (an initializer or a ``Constant`` node), else None."""
    try:
        return torch.as_tensor(get_const_value(name, graph))
    except KeyError:
        return None


class Reduce18(nn.Module, OnnxToTorchModule):
    """``Reduce*`` from opset 18: the axes (sorted, possibly negative) are fixed at conversion."""

    def __init__(self, op_type: str, axes: Optional[list[int]], keepdims: bool, noop: bool) -> None:
        super().__init__()
        self.op_type, self.axes, self.keepdims, self.noop = op_type, axes, keepdims, noop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.axes:
            if self.noop:
                return x
            axes = list(range(x.dim()))
        else:
            axes = sorted(a % x.dim() for a in self.axes)
        return _reduce(self.op_type, x, axes, self.keepdims)


def _reduce(op_type: str, x: torch.Tensor, axes: list[int], keepdim: bool) -> torch.Tensor:
    if op_type == "ReduceMean":
        return torch.mean(x, dim=axes, keepdim=keepdim)
    if op_type == "ReduceSumSquare":
        return torch.sum(x * x, dim=axes, keepdim=keepdim)
    if op_type == "ReduceL1":
        return torch.sum(torch.abs(x), dim=axes, keepdim=keepdim)
    if op_type == "ReduceL2":
        return torch.sqrt(torch.sum(x * x, dim=axes, keepdim=keepdim))
    if op_type == "ReduceLogSum":
        return torch.log(torch.sum(x, dim=axes, keepdim=keepdim))
    if op_type == "ReduceLogSumExp":
        return torch.logsumexp(x, dim=axes, keepdim=keepdim)
    out = x
    for axis in reversed(axes):  # one axis at a time, last first, so earlier indices stay valid
        if op_type == "ReduceMax":
            out = torch.amax(out, dim=axis, keepdim=keepdim)
        elif op_type == "ReduceMin":
            out = torch.amin(out, dim=axis, keepdim=keepdim)
        else:  # ReduceProd
            out = torch.prod(out, dim=axis, keepdim=keepdim)
    return out


def _convert_reduce18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    axes: Optional[list[int]] = None
    if len(node.input_values) > 1 and node.input_values[1]:
        value = _constant(node.input_values[1], graph)
        if value is None:
            raise NotImplementedError(f"{node.operation_type} with axes computed at run time")
        axes = [int(a) for a in value.reshape(-1).tolist()]
    module = Reduce18(
        node.operation_type,
        axes,
        bool(node.attributes.get("keepdims", 1)),
        bool(node.attributes.get("noop_with_empty_axes", 0)),
    )
    return OperationConverterResult(
        torch_module=module, onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    )


# ---------------------------------------------------------------------------------- Split-18


class SplitInto(nn.Module, OnnxToTorchModule):
    """``Split``-18 with ``num_outputs``: chunks of ceil(size / n), the last one smaller."""

    def __init__(self, axis: int, num_outputs: int) -> None:
        super().__init__()
        self.axis, self.num_outputs = axis, num_outputs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = x.shape[self.axis]
        return torch.split(x, math.ceil(size / self.num_outputs), dim=self.axis)


def _convert_split18(previous: Optional[Callable]) -> Callable:
    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        has_sizes = len(node.input_values) > 1 and bool(node.input_values[1])
        if "num_outputs" not in node.attributes or has_sizes:
            if previous is None:
                raise NotImplementedError("Split")
            return previous(node, graph)
        module = SplitInto(int(node.attributes.get("axis", 0)), int(node.attributes["num_outputs"]))
        return OperationConverterResult(
            torch_module=module, onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
        )

    return convert


# ---------------------------------------------------------------------------------- Reshape allowzero


class ReshapeAllowZero(nn.Module, OnnxToTorchModule):
    """``Reshape`` with ``allowzero=1``: a 0 in the shape is a zero-size dimension, as in torch."""

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, [int(d) for d in shape.tolist()])


def _convert_reshape(previous: Callable) -> Callable:
    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        if not node.attributes.get("allowzero", 0):
            return previous(node, graph)
        return OperationConverterResult(torch_module=ReshapeAllowZero(), onnx_mapping=onnx_mapping_from_node(node))

    return convert


# ---------------------------------------------------------------------------------- Gelu-20


class Gelu(nn.Module, OnnxToTorchModule):
    def __init__(self, approximate: str) -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(x, approximate=self.approximate)


def _convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    approximate = node.attributes.get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    if approximate not in ("none", "tanh"):
        raise NotImplementedError(f"Gelu with approximate={approximate!r}")
    return OperationConverterResult(torch_module=Gelu(approximate), onnx_mapping=onnx_mapping_from_node(node))


# ---------------------------------------------------------------------------------- registry


def _all_default_ops() -> set[str]:
    return {key.operation_type for key in _CONVERTER_REGISTRY if key.domain == ""}


def register() -> None:
    """Install the converters above and an alias for every newer schema version (up to
    :data:`MAX_OPSET`) of an op onnx2torch converts at an older one.  Idempotent; never replaces an
    existing entry."""
    for op_type in REDUCE_OPS:
        install(op_type, [v for v in schema_versions(op_type, since=18) if v <= MAX_OPSET], _convert_reduce18)
    split_versions = [v for v in schema_versions("Split", since=18) if v <= MAX_OPSET]
    install("Split", split_versions, _convert_split18(_registered_before("Split", 18)))
    reshape_14 = _CONVERTER_REGISTRY.get(OperationDescription(domain="", operation_type="Reshape", version=14))
    if reshape_14 is not None and not is_ours(reshape_14):
        versions = [v for v in schema_versions("Reshape", since=14) if v <= MAX_OPSET]
        install("Reshape", versions, _convert_reshape(reshape_14))
    install("Gelu", [v for v in schema_versions("Gelu") if v <= MAX_OPSET], _convert_gelu)
    for op_type in sorted(_all_default_ops()):
        for version in schema_versions(op_type, since=14):
            if version > MAX_OPSET:
                break
            key = OperationDescription(domain="", operation_type=op_type, version=version)
            if key in _CONVERTER_REGISTRY:  # converted already (or aliased by an earlier call)
                continue
            previous = _registered_before(op_type, version)
            if previous is None:
                continue
            alias = _alias(op_type, previous)
            install(op_type, [version], alias)
