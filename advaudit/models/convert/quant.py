"""onnx2torch converters for quantised graphs: exact ONNX Runtime forward, straight-through backward.

ONNX Runtime's quantiser writes two formats, and ``quantize_dynamic`` a third:

* **QDQ**: float operators between ``QuantizeLinear``/``DequantizeLinear`` pairs (weights stored
  as integers behind a ``DequantizeLinear``).
* **QOperator**: ``QLinearConv``, ``QLinearMatMul`` and com.microsoft's ``QGemm``, ``QLinearAdd``,
  ``QLinearMul``, ``QLinearGlobalAveragePool``, ``QLinearAveragePool``, ``QLinearConcat``,
  ``QLinearSigmoid``, ``QLinearLeakyRelu`` on integer tensors; layout ops (``MaxPool``,
  ``Reshape``, ...) run on the integers directly.
* **dynamic**: ``DynamicQuantizeLinear`` feeding ``ConvInteger``/``MatMulInteger``.

Representation.  The twin is a float network: a tensor that ONNX types as an integer is a float
tensor holding the integer values (float32 for 8/16-bit results, float64 for the int32
accumulators of ``ConvInteger``/``MatMulInteger``, which float32 cannot hold exactly).  Every
converter here accepts either that representation or a real integer tensor for any integer input.
Constant inputs (weights, scales, zero points, biases) become buffers of the module.

Forward.  Each op follows ONNX semantics the way ONNX Runtime's CPU kernels (MLAS) evaluate them,
down to the float32 operation order of the requantisation (``float(acc + bias) * (x_scale * w_scale
/ y_scale)``, rounded half to even, clamped, plus the zero point), so that the twin agrees with ORT
except where a value lies within float rounding of a .5 boundary.  Integer products are summed in
float64 (exact below 2**53) and snapped to the nearest integer, which also absorbs the error of
non-exact convolution algorithms (Winograd, FFT) a backend may pick.

Backward.  Straight-through (BPDA): rounding and saturation pass the gradient of the real-valued
expression they round inside the representable range and zero outside, so ``QuantizeLinear`` has
gradient ``1/scale`` in range, ``QuantizeLinear -> DequantizeLinear`` the identity in range, and an
integer op the gradient of its float counterpart on the dequantised values.  Scales and zero
points computed at run time (``DynamicQuantizeLinear``) carry no gradient.

``Conv``/``ConvTranspose`` are re-registered too: onnx2torch requires their weights to be graph
initializers, which a QDQ graph's weights (a ``DequantizeLinear`` output) are not.  Graphs with
initializer weights still get onnx2torch's own ``nn.Conv*`` modules.  ``MaxPool``/``AveragePool``
are wrapped so that onnx2torch learns the input rank from ``kernel_shape`` where onnx's shape
inference stops (it cannot type com.microsoft ops), and the converters here record the rank of
their outputs for the same reason.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from onnx import NodeProto, TensorProto, helper, numpy_helper
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnx2torch.onnx_graph import OnnxGraph, ValueType
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from .ste import install, is_ours, schema_versions, straight_through

__all__ = [
    "DYNAMIC_WEIGHT_OPS",
    "MS_DOMAIN",
    "QUANT_OPS",
    "QUANT_OP_DOMAINS",
    "RANK_FROM_KERNEL_OPS",
    "STRAIGHT_THROUGH_QUANT_OPS",
    "is_straight_through_quant_node",
    "register",
]

MS_DOMAIN = "com.microsoft"

#: ``(domain, op_type)`` of every quantised operator converted here ("" is the ONNX domain).
QUANT_OP_DOMAINS: frozenset[tuple[str, str]] = frozenset(
    {
        ("", "QuantizeLinear"),
        (MS_DOMAIN, "QuantizeLinear"),
        ("", "DequantizeLinear"),
        (MS_DOMAIN, "DequantizeLinear"),
        ("", "DynamicQuantizeLinear"),
        ("", "QLinearConv"),
        ("", "QLinearMatMul"),
        ("", "ConvInteger"),
        ("", "MatMulInteger"),
        (MS_DOMAIN, "QGemm"),
        (MS_DOMAIN, "QLinearAdd"),
        (MS_DOMAIN, "QLinearMul"),
        (MS_DOMAIN, "QLinearGlobalAveragePool"),
        (MS_DOMAIN, "QLinearAveragePool"),
        (MS_DOMAIN, "QLinearConcat"),
        (MS_DOMAIN, "QLinearSigmoid"),
        (MS_DOMAIN, "QLinearLeakyRelu"),
    }
)
#: Op types of the quantised operators converted here.
QUANT_OPS: tuple[str, ...] = tuple(sorted({op for _, op in QUANT_OP_DOMAINS}))
#: Quantised op types that round (so their twin gradient is straight-through).  ``DequantizeLinear``,
#: ``ConvInteger``, ``MatMulInteger`` (and ``QGemm`` without an output scale) are exact linear maps.
STRAIGHT_THROUGH_QUANT_OPS: tuple[str, ...] = tuple(
    op for op in QUANT_OPS if op not in ("DequantizeLinear", "ConvInteger", "MatMulInteger")
)
#: Float ops re-registered so that their weights may come from a ``DequantizeLinear``.
DYNAMIC_WEIGHT_OPS: tuple[str, ...] = ("Conv", "ConvTranspose")
#: onnx2torch converters wrapped to learn the input rank from ``kernel_shape`` when shape inference
#: could not type the input (anything downstream of a com.microsoft op, which onnx cannot infer).
RANK_FROM_KERNEL_OPS: tuple[str, ...] = ("MaxPool", "AveragePool")

# Saturation range of each integer element type.
_QRANGE: Mapping[int, tuple[int, int]] = {
    TensorProto.UINT8: (0, 255),
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT16: (-32768, 32767),
    TensorProto.INT32: (-(2**31), 2**31 - 1),
    TensorProto.UINT4: (0, 15),
    TensorProto.INT4: (-8, 7),
    **({TensorProto.UINT2: (0, 3), TensorProto.INT2: (-2, 1)} if hasattr(TensorProto, "INT2") else {}),
}
_FLOAT_TYPES: Mapping[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16,
}
_WIDE_INTEGERS = (TensorProto.INT64, TensorProto.UINT32, TensorProto.UINT64)
_ACCUMULATE = torch.float64  # dtype of integer sums: exact to 2**53
_CONV_FNS: Mapping[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T_FNS: Mapping[int, Callable[..., torch.Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}


# ----------------------------------------------------------------------------------------------
# Numerics shared by the modules (pure functions on tensors)
# ----------------------------------------------------------------------------------------------


def _f32(t: Optional[torch.Tensor]) -> torch.Tensor:
    """``t`` as float32 (a missing zero point is 0)."""
    return torch.zeros((), dtype=torch.float32) if t is None else t.to(torch.float32)


def _centered(q: torch.Tensor, zero_point: Optional[torch.Tensor]) -> torch.Tensor:
    """``q - zero_point`` in the accumulation dtype (exact for integer inputs)."""
    q = q.to(_ACCUMULATE)
    return q if zero_point is None else q - zero_point.to(q.device, _ACCUMULATE)


def _snap(acc: torch.Tensor) -> torch.Tensor:
    """An integer-valued sum rounded to the exact integer, gradient unchanged.

    ``acc + (round(acc) - acc)`` is exactly ``round(acc)`` in float64 since the difference is exact
    (Sterbenz) and the result representable.
    """
    return acc + (torch.round(acc) - acc).detach()


def requantize(pre: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``clamp(round_half_even(pre), qmin - zp, qmax - zp) + zp`` with straight-through gradient
    (1 where ``pre`` lies in the clamp range, 0 outside) -- MLAS's QuantizeLinear/Requantize."""
    zero_point = zero_point.to(pre.device, pre.dtype)
    low, high = qmin - zero_point, qmax - zero_point
    value = torch.minimum(torch.maximum(torch.round(pre.detach()), low), high) + zero_point
    inside = ((pre.detach() >= low) & (pre.detach() <= high)).to(pre.dtype)
    return straight_through(pre, value, inside)


def _axis_param(
    param: Optional[torch.Tensor], rank: int, axis: int, block: int, size: int
) -> Optional[torch.Tensor]:
    """A scale or zero point shaped to broadcast against a rank-``rank`` tensor whose ``axis``
    has ``size`` elements: per tensor, per axis, or (``block`` > 0) per block along ``axis``."""
    if param is None or param.numel() == 1 and block == 0:
        return None if param is None else param.reshape(())
    axis = axis % rank
    if block > 0:
        return param.repeat_interleave(block, dim=axis).narrow(axis, 0, size)
    shape = [1] * rank
    shape[axis] = -1
    return param.reshape(shape)


def _channel_param(param: Optional[torch.Tensor], rank: int) -> Optional[torch.Tensor]:
    """A per-output-channel parameter (shape ``(M,)``) shaped ``(1, M, 1, ...)`` for an NC... tensor."""
    if param is None or param.numel() == 1:
        return None if param is None else param.reshape(())
    return param.reshape(1, -1, *([1] * (rank - 2)))


def _filter_param(param: Optional[torch.Tensor], rank: int) -> Optional[torch.Tensor]:
    """A per-output-channel parameter shaped ``(M, 1, ...)`` to broadcast against conv filters."""
    if param is None or param.numel() == 1:
        return None if param is None else param.reshape(())
    return param.reshape(-1, *([1] * (rank - 1)))


@dataclass(frozen=True)
class ConvSpec:
    """The ONNX ``Conv`` attributes that shape the computation."""

    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    auto_pad: str = "NOTSET"
    group: int = 1
    output_padding: tuple[int, ...] = ()

    @classmethod
    def from_node(cls, node: OnnxNode) -> "ConvSpec":
        """Read the attributes of a Conv-like node."""
        attrs = node.attributes
        if "output_shape" in attrs:
            raise NotImplementedError("ConvTranspose with output_shape is not implemented")
        return cls(
            strides=tuple(attrs.get("strides", ())),
            dilations=tuple(attrs.get("dilations", ())),
            pads=tuple(attrs.get("pads", ())),
            auto_pad=attrs.get("auto_pad", "NOTSET"),
            group=int(attrs.get("group", 1)),
            output_padding=tuple(attrs.get("output_padding", ())),
        )

    def steps(self, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Strides and dilations, defaulted to 1 for ``rank`` spatial dims."""
        return self.strides or (1,) * rank, self.dilations or (1,) * rank


def conv_pads(spec: ConvSpec, sizes: Sequence[int], kernel: Sequence[int]) -> list[tuple[int, int]]:
    """``(begin, end)`` padding per spatial dim, resolving ``auto_pad`` against the input sizes."""
    rank = len(sizes)
    strides, dilations = spec.steps(rank)
    if spec.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pairs = []
        for size, k, s, d in zip(sizes, kernel, strides, dilations):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            pairs.append((small, total - small) if spec.auto_pad == "SAME_UPPER" else (total - small, small))
        return pairs
    if spec.auto_pad == "VALID" or not spec.pads:
        return [(0, 0)] * rank
    return list(zip(spec.pads[:rank], spec.pads[rank:]))


def conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], spec: ConvSpec) -> torch.Tensor:
    """ONNX ``Conv`` (zero padding, asymmetric pads and ``auto_pad`` included) with torch's functional conv."""
    rank = weight.dim() - 2
    pairs = conv_pads(spec, x.shape[2:], weight.shape[2:])
    if all(a == b for a, b in pairs):
        padding = [a for a, _ in pairs]
    else:
        x = F.pad(x, [v for pair in reversed(pairs) for v in pair])
        padding = [0] * rank
    strides, dilations = spec.steps(rank)
    return _CONV_FNS[rank](x, weight, bias, stride=strides, padding=padding, dilation=dilations, groups=spec.group)


def conv_transpose(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], spec: ConvSpec
) -> torch.Tensor:
    """ONNX ``ConvTranspose`` with symmetric explicit pads."""
    rank = weight.dim() - 2
    if spec.auto_pad not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"ConvTranspose with auto_pad={spec.auto_pad} is not implemented")
    pairs = conv_pads(spec, x.shape[2:], weight.shape[2:])
    if any(a != b for a, b in pairs):
        raise NotImplementedError("ConvTranspose with asymmetric pads is not implemented")
    strides, dilations = spec.steps(rank)
    return _CONV_T_FNS[rank](
        x,
        weight,
        bias,
        stride=strides,
        padding=[a for a, _ in pairs],
        output_padding=spec.output_padding or (0,) * rank,
        groups=spec.group,
        dilation=dilations,
    )


# ----------------------------------------------------------------------------------------------
# Module base: constant inputs as buffers, run-time inputs as forward arguments
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operands:
    """Where each ONNX input of a node comes from: ``"r"`` a forward argument, ``"c"`` a buffer
    (constant), ``""`` absent (optional input left out)."""

    slots: tuple[str, ...]
    constants: Mapping[int, torch.Tensor]


class QuantModule(nn.Module, OnnxToTorchModule):
    """Base of the modules here: ``forward(*runtime_inputs)`` -> ``compute(*all_inputs)``, where
    constant inputs are read from buffers ``const_<index>`` and absent ones are None."""

    arity = 0

    def __init__(self, operands: Operands) -> None:
        super().__init__()
        self.slots = operands.slots + ("",) * (self.arity - len(operands.slots))
        for index, tensor in operands.constants.items():
            self.register_buffer(f"const_{index}", tensor)

    def operands(self, args: Sequence[torch.Tensor]) -> list[Optional[torch.Tensor]]:
        """All inputs in ONNX order."""
        runtime = iter(args)
        out: list[Optional[torch.Tensor]] = []
        for index, kind in enumerate(self.slots):
            if kind == "r":
                out.append(next(runtime))
            elif kind == "c":
                out.append(getattr(self, f"const_{index}"))
            else:
                out.append(None)
        return out

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run :meth:`compute` on all inputs."""
        return self.compute(*self.operands(args))

    def compute(self, *inputs: Optional[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The op itself (subclasses)."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class QuantizeLinear(QuantModule):
    """``y = saturate(round(x / scale) + zp)``; gradient ``1/scale`` inside the range, 0 outside."""

    arity = 3

    def __init__(self, operands: Operands, axis: int, block: int, qrange: tuple[int, int]) -> None:
        super().__init__(operands)
        self.axis, self.block, self.qrange = axis, block, qrange

    def compute(self, x: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor]) -> torch.Tensor:
        """Quantised values as float32."""
        x = x.to(torch.float32)
        size = x.shape[self.axis % x.dim()] if x.dim() else 1
        scale = _axis_param(_f32(scale), x.dim(), self.axis, self.block, size)
        zero_point = _axis_param(_f32(zero_point), x.dim(), self.axis, self.block, size)
        return requantize(x / scale, zero_point, *self.qrange)


class DequantizeLinear(QuantModule):
    """``y = (x - zp) * scale`` (the difference exact, then float32 as ORT); gradient ``scale``."""

    arity = 3

    def __init__(self, operands: Operands, axis: int, block: int, out_dtype: Optional[torch.dtype]) -> None:
        super().__init__(operands)
        self.axis, self.block, self.out_dtype = axis, block, out_dtype

    def compute(self, x: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor]) -> torch.Tensor:
        """Dequantised values."""
        rank = x.dim()
        size = x.shape[self.axis % rank] if rank else 1
        centered = _centered(x, _axis_param(zero_point, rank, self.axis, self.block, size))
        value = centered.to(torch.float32) * _axis_param(_f32(scale), rank, self.axis, self.block, size)
        out_dtype = self.out_dtype or (scale.dtype if scale.is_floating_point() else torch.float32)
        return value.to(out_dtype)


class DynamicQuantizeLinear(QuantModule):
    """uint8 quantisation with scale and zero point from the tensor's range (ORT's formula); the
    scale and zero point outputs carry no gradient."""

    arity = 1

    def compute(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y, y_scale, y_zero_point)``, all float32."""
        x = x.to(torch.float32)
        low = torch.clamp(x.detach().min(), max=0.0)
        high = torch.clamp(x.detach().max(), min=0.0)
        scale = torch.where(high == low, torch.ones_like(high), (high - low) / 255.0)
        zero_point = torch.round(torch.clamp(0.0 - low / scale, 0.0, 255.0))
        return requantize(x / scale, zero_point, 0, 255), scale, zero_point


class ConvInteger(QuantModule):
    """``conv(x - x_zp, w - w_zp)`` as an exact integer (float64) tensor; padding is ``x_zp``."""

    arity = 4

    def __init__(self, operands: Operands, spec: ConvSpec) -> None:
        super().__init__(operands)
        self.spec = spec

    def compute(
        self, x: torch.Tensor, w: torch.Tensor, x_zp: Optional[torch.Tensor], w_zp: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The int32 accumulator, as float64."""
        weight = _centered(w, _filter_param(w_zp, w.dim()))
        return _snap(conv(_centered(x, x_zp), weight, None, self.spec))


class MatMulInteger(QuantModule):
    """``(a - a_zp) @ (b - b_zp)`` as an exact integer (float64) tensor; ``a_zp`` may be per row."""

    arity = 4

    def compute(
        self, a: torch.Tensor, b: torch.Tensor, a_zp: Optional[torch.Tensor], b_zp: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The int32 product, as float64."""
        if a_zp is not None and a_zp.dim() == 1 and a_zp.numel() > 1:
            a_zp = a_zp.unsqueeze(-1)
        return _snap(_centered(a, a_zp) @ _centered(b, b_zp))


class QLinearConv(QuantModule):
    """ONNX ``QLinearConv``: exact integer convolution plus int32 bias, requantised by
    ``float(acc) * (x_scale * w_scale / y_scale)``."""

    arity = 9

    def __init__(self, operands: Operands, spec: ConvSpec, qrange: tuple[int, int]) -> None:
        super().__init__(operands)
        self.spec, self.qrange = spec, qrange

    def compute(
        self,
        x: torch.Tensor,
        x_scale: torch.Tensor,
        x_zp: Optional[torch.Tensor],
        w: torch.Tensor,
        w_scale: torch.Tensor,
        w_zp: Optional[torch.Tensor],
        y_scale: torch.Tensor,
        y_zp: Optional[torch.Tensor],
        bias: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Quantised output as float32."""
        weight = _centered(w, _filter_param(w_zp, w.dim()))
        acc = _snap(conv(_centered(x, x_zp), weight, None, self.spec))
        if bias is not None:
            acc = acc + _channel_param(bias.to(_ACCUMULATE), acc.dim())
        multiplier = _channel_param(_f32(x_scale) * _f32(w_scale) / _f32(y_scale), acc.dim())
        return requantize(acc.to(torch.float32) * multiplier, _f32(y_zp), *self.qrange)


class QLinearMatMul(QuantModule):
    """ONNX ``QLinearMatMul``: exact integer product requantised by ``a_scale * b_scale / y_scale``."""

    arity = 8

    def __init__(self, operands: Operands, qrange: tuple[int, int]) -> None:
        super().__init__(operands)
        self.qrange = qrange

    def compute(
        self,
        a: torch.Tensor,
        a_scale: torch.Tensor,
        a_zp: Optional[torch.Tensor],
        b: torch.Tensor,
        b_scale: torch.Tensor,
        b_zp: Optional[torch.Tensor],
        y_scale: torch.Tensor,
        y_zp: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Quantised output as float32."""
        acc = _snap(_centered(a, a_zp) @ _centered(b, b_zp))
        multiplier = _f32(a_scale) * _f32(b_scale) / _f32(y_scale)
        return requantize(acc.to(torch.float32) * multiplier, _f32(y_zp), *self.qrange)


class QGemm(QuantModule):
    """com.microsoft ``QGemm``: ``alpha * A' B'`` on integers plus an int32 ``C``; float output
    ``float(acc) * alpha * a_scale * b_scale``, or requantised when ``y_scale`` is given."""

    arity = 9

    def __init__(
        self, operands: Operands, alpha: float, trans_a: bool, trans_b: bool, qrange: tuple[int, int]
    ) -> None:
        super().__init__(operands)
        self.alpha, self.trans_a, self.trans_b, self.qrange = alpha, trans_a, trans_b, qrange

    def compute(
        self,
        a: torch.Tensor,
        a_scale: torch.Tensor,
        a_zp: Optional[torch.Tensor],
        b: torch.Tensor,
        b_scale: torch.Tensor,
        b_zp: Optional[torch.Tensor],
        c: Optional[torch.Tensor] = None,
        y_scale: Optional[torch.Tensor] = None,
        y_zp: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Float or quantised (float32 holding integers) output."""
        a = a.transpose(0, 1) if self.trans_a else a
        b = b.transpose(0, 1) if self.trans_b else b
        acc = _snap(_centered(a, a_zp) @ _centered(b, b_zp))
        if c is not None:
            acc = acc + c.to(_ACCUMULATE)
        scale = torch.tensor(self.alpha, dtype=torch.float32, device=acc.device) * _f32(a_scale) * _f32(b_scale)
        if y_scale is None:
            return acc.to(torch.float32) * scale
        return requantize(acc.to(torch.float32) * (scale / _f32(y_scale)), _f32(y_zp), *self.qrange)


def _fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` rounded once to float32 (a fused multiply-add, as MLAS's AVX2 kernels)."""
    return (a.to(torch.float64) * b.to(torch.float64) + c.to(torch.float64)).to(torch.float32)


class QLinearAdd(QuantModule):
    """com.microsoft ``QLinearAdd`` as MLAS computes it:
    ``round(fma(a, sa/sc, fma(b, sb/sc, zc - (sa/sc*za + sb/sc*zb))))``, saturated."""

    arity = 8

    def __init__(self, operands: Operands, qrange: tuple[int, int]) -> None:
        super().__init__(operands)
        self.qrange = qrange

    def compute(
        self,
        a: torch.Tensor,
        a_scale: torch.Tensor,
        a_zp: Optional[torch.Tensor],
        b: torch.Tensor,
        b_scale: torch.Tensor,
        b_zp: Optional[torch.Tensor],
        c_scale: torch.Tensor,
        c_zp: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Quantised sum as float32."""
        ratio_a, ratio_b = _f32(a_scale) / _f32(c_scale), _f32(b_scale) / _f32(c_scale)
        fixed = _f32(c_zp) - (ratio_a * _f32(a_zp) + ratio_b * _f32(b_zp))
        pre = _fma32(a, ratio_a, _fma32(b, ratio_b, fixed))
        return requantize(pre, torch.zeros((), dtype=torch.float32), *self.qrange)


class QLinearMul(QuantModule):
    """com.microsoft ``QLinearMul`` as MLAS computes it:
    ``round(float((a - za) * (b - zb)) * (sa * sb / sc) + zc)``, saturated."""

    arity = 8

    def __init__(self, operands: Operands, qrange: tuple[int, int]) -> None:
        super().__init__(operands)
        self.qrange = qrange

    def compute(
        self,
        a: torch.Tensor,
        a_scale: torch.Tensor,
        a_zp: Optional[torch.Tensor],
        b: torch.Tensor,
        b_scale: torch.Tensor,
        b_zp: Optional[torch.Tensor],
        c_scale: torch.Tensor,
        c_zp: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Quantised product as float32."""
        product = (_centered(a, a_zp) * _centered(b, b_zp)).to(torch.float32)
        pre = product * (_f32(a_scale) * _f32(b_scale) / _f32(c_scale)) + _f32(c_zp)
        return requantize(pre, torch.zeros((), dtype=torch.float32), *self.qrange)


class QLinearGlobalAveragePool(QuantModule):
    """com.microsoft ``QLinearGlobalAveragePool``: exact sum of ``x - x_zp`` over the image,
    requantised by ``x_scale / (y_scale * image_size)``."""

    arity = 5

    def __init__(self, operands: Operands, channels_last: bool, qrange: tuple[int, int]) -> None:
        super().__init__(operands)
        self.channels_last, self.qrange = channels_last, qrange

    def compute(
        self,
        x: torch.Tensor,
        x_scale: torch.Tensor,
        x_zp: Optional[torch.Tensor],
        y_scale: torch.Tensor,
        y_zp: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Quantised means, spatial dims kept as 1."""
        dims = tuple(range(1, x.dim() - 1)) if self.channels_last else tuple(range(2, x.dim()))
        size = math.prod(x.shape[d] for d in dims)
        acc = _centered(x, x_zp).sum(dim=dims, keepdim=True)
        scale = _f32(x_scale) / (_f32(y_scale) * float(size))
        return requantize(acc.to(torch.float32) * scale, _f32(y_zp), *self.qrange)


@dataclass(frozen=True)
class PoolSpec:
    """The ONNX ``AveragePool`` attributes (2-D)."""

    kernel: tuple[int, ...]
    conv: ConvSpec  # strides, pads, auto_pad
    ceil_mode: bool = False
    count_include_pad: bool = False

    @classmethod
    def from_node(cls, node: OnnxNode) -> "PoolSpec":
        """Read the attributes of an AveragePool-like node."""
        attrs = node.attributes
        return cls(
            tuple(attrs["kernel_shape"]),
            ConvSpec.from_node(node),
            bool(attrs.get("ceil_mode", 0)),
            bool(attrs.get("count_include_pad", 0)),
        )


def pool_output_size(size: int, kernel: int, stride: int, pads: tuple[int, int], ceil_mode: bool) -> int:
    """Output length of a pooling window sweep (the last window must start inside input + begin pad)."""
    span = size + pads[0] + pads[1] - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    return out - 1 if ceil_mode and (out - 1) * stride >= size + pads[0] else out


def window_sums(v: torch.Tensor, spec: PoolSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over each pooling window, added in ORT's order (row-major over the window, float32),
    and the number of input (non-padding) elements per window."""
    sizes = v.shape[2:]
    pairs = conv_pads(spec.conv, sizes, spec.kernel)
    strides, _ = spec.conv.steps(len(sizes))
    outs = [pool_output_size(n, k, s, p, spec.ceil_mode) for n, k, s, p in zip(sizes, spec.kernel, strides, pairs)]
    ends = [(o - 1) * s + k - n - p[0] for o, s, k, n, p in zip(outs, strides, spec.kernel, sizes, pairs)]
    padding = [pairs[1][0], ends[1], pairs[0][0], ends[0]]
    patches = F.unfold(F.pad(v, padding), spec.kernel, stride=strides)
    patches = patches.view(v.shape[0], v.shape[1], math.prod(spec.kernel), -1)
    sums = patches[:, :, 0]
    for index in range(1, patches.shape[2]):
        sums = sums + patches[:, :, index]
    ones = F.pad(torch.ones((1, 1, *sizes), dtype=v.dtype, device=v.device), padding)
    counts = F.unfold(ones, spec.kernel, stride=strides).sum(dim=1)
    return sums.view(*v.shape[:2], *outs), counts.view(1, 1, *outs)


class QLinearAveragePool(QuantModule):
    """com.microsoft ``QLinearAveragePool`` (2-D) as ORT computes it: dequantise to float32, sum
    each window in order, divide by the element count, ``round(y / y_scale + y_zp)`` saturated."""

    arity = 5

    def __init__(self, operands: Operands, spec: PoolSpec, channels_last: bool, qrange: tuple[int, int]) -> None:
        super().__init__(operands)
        if len(spec.kernel) != 2:
            raise NotImplementedError(f"QLinearAveragePool with a {len(spec.kernel)}-D kernel is not implemented")
        self.spec, self.channels_last, self.qrange = spec, channels_last, qrange

    def compute(
        self,
        x: torch.Tensor,
        x_scale: torch.Tensor,
        x_zp: Optional[torch.Tensor],
        y_scale: torch.Tensor,
        y_zp: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Quantised averages as float32."""
        x = x.movedim(-1, 1) if self.channels_last else x
        value = _f32(x_scale) * _centered(x, x_zp).to(torch.float32)
        sums, counts = window_sums(value, self.spec)
        if self.spec.count_include_pad:
            counts = torch.full_like(counts, float(math.prod(self.spec.kernel)))
        pre = sums / counts / _f32(y_scale) + _f32(y_zp)
        out = requantize(pre, torch.zeros((), dtype=torch.float32), *self.qrange)
        return out.movedim(1, -1) if self.channels_last else out


class QLinearConcat(QuantModule):
    """com.microsoft ``QLinearConcat``: each input requantised to the output's scale and zero point
    (ORT's lookup table ``quantize(x_scale * (x - x_zp))``), then concatenated."""

    arity = 0  # variadic: (y_scale, y_zp, then (x, x_scale, x_zp) per input)

    def __init__(self, operands: Operands, axis: int, qrange: tuple[int, int]) -> None:
        super().__init__(operands)
        self.axis, self.qrange = axis, qrange

    def compute(
        self, y_scale: torch.Tensor, y_zp: Optional[torch.Tensor], *triples: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The concatenation as float32."""
        parts = []
        for x, x_scale, x_zp in zip(triples[0::3], triples[1::3], triples[2::3]):
            value = _f32(x_scale) * _centered(x, x_zp).to(torch.float32)
            parts.append(requantize(value / _f32(y_scale), _f32(y_zp), *self.qrange))
        return torch.cat(parts, dim=self.axis)


class QLinearLookup(QuantModule):
    """com.microsoft ``QLinearSigmoid``/``QLinearLeakyRelu``: ``quantize(f(x_scale * (x - x_zp)))``
    (ORT builds the same values into a 256-entry table)."""

    arity = 5

    def __init__(self, operands: Operands, function: str, alpha: float, qrange: tuple[int, int]) -> None:
        super().__init__(operands)
        self.function, self.alpha, self.qrange = function, alpha, qrange

    def compute(
        self,
        x: torch.Tensor,
        x_scale: torch.Tensor,
        x_zp: Optional[torch.Tensor],
        y_scale: torch.Tensor,
        y_zp: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Quantised activation as float32."""
        value = _f32(x_scale) * _centered(x, x_zp).to(torch.float32)
        if self.function == "QLinearSigmoid":
            value = torch.sigmoid(value)
        else:
            value = torch.where(value >= 0, value, torch.tensor(self.alpha, dtype=torch.float32) * value)
        return requantize(value / _f32(y_scale), _f32(y_zp), *self.qrange)


class DynamicWeightConv(QuantModule):
    """Float ``Conv``/``ConvTranspose`` whose weight (and bias) may be computed in the graph."""

    arity = 3

    def __init__(self, operands: Operands, spec: ConvSpec, transpose: bool) -> None:
        super().__init__(operands)
        self.spec, self.transpose = spec, transpose

    def compute(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The convolution in ``x``'s dtype."""
        weight = weight.to(x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
        return (conv_transpose if self.transpose else conv)(x, weight, bias, self.spec)


# ----------------------------------------------------------------------------------------------
# Conversion-time helpers: constants, element types, saturation ranges
# ----------------------------------------------------------------------------------------------


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
    if proto.data_type in _QRANGE or proto.data_type in (TensorProto.BOOL,):
        return torch.from_numpy(np.ascontiguousarray(array.astype(np.int32)))
    if proto.data_type in _WIDE_INTEGERS:
        return torch.from_numpy(np.ascontiguousarray(array.astype(np.int64)))
    if proto.data_type in _FLOAT_TYPES:
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
        if onnx_type is not None and onnx_type not in _QRANGE:
            raise NotImplementedError(f"{node.operation_type} to ONNX type {onnx_type} is not implemented")
    inferred = [_elem_type(node.output_values[0], graph), *(_elem_type(_input(node, i), graph) for i in fallback)]
    return next((t for t in [*declared, *inferred] if t in _QRANGE), TensorProto.UINT8)


def qrange_of(node: OnnxNode, graph: OnnxGraph, zp_index: int, fallback: Sequence[int] = ()) -> tuple[int, int]:
    """Saturation range of :func:`qtype_of`."""
    return _QRANGE[qtype_of(node, graph, zp_index, fallback)]


# ----------------------------------------------------------------------------------------------
# Converters
# ----------------------------------------------------------------------------------------------

Builder = Callable[[OnnxNode, OnnxGraph, Operands], nn.Module]
_QTYPE_OF_RANGE: Mapping[tuple[int, int], int] = {qrange: onnx_type for onnx_type, qrange in _QRANGE.items()}


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
    out_dtype = _FLOAT_TYPES.get(attrs.get("output_dtype", 0))
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
