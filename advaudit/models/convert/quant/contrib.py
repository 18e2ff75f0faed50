"""torch modules for the com.microsoft quantised operators (QOperator format of ONNX Runtime).

``QGemm``, ``QLinearAdd``, ``QLinearMul``, the two average pools, ``QLinearConcat`` and the
table-driven activations, each computed the way ONNX Runtime's CPU kernels (MLAS) compute them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, cast

import torch
import torch.nn.functional as F
from onnx2torch.onnx_node import OnnxNode

from .modules import Operands, QLinearOp, Quantised, QuantModule
from .numerics import ACCUMULATE, ConvSpec, centered, conv_pads, f32, fma32, requantize, snap


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
        acc = snap(centered(a, a_zp) @ centered(b, b_zp))
        if c is not None:
            acc = acc + c.to(ACCUMULATE)
        scale = torch.tensor(self.alpha, dtype=torch.float32, device=acc.device) * f32(a_scale) * f32(b_scale)
        if y_scale is None:
            return acc.to(torch.float32) * scale
        return requantize(acc.to(torch.float32) * (scale / f32(y_scale)), f32(y_zp), *self.qrange)



class QLinearAdd(QLinearOp):
    """com.microsoft ``QLinearAdd`` as MLAS computes it:
    ``round(fma(a, sa/sc, fma(b, sb/sc, zc - (sa/sc*za + sb/sc*zb))))``, saturated."""

    def evaluate(self, inputs: Sequence[Quantised], out: Quantised) -> torch.Tensor:
        """Quantised sum as float32."""
        a, b = inputs
        ratio_a, ratio_b = f32(a.scale) / f32(out.scale), f32(b.scale) / f32(out.scale)
        fixed = f32(out.zp) - (ratio_a * f32(a.zp) + ratio_b * f32(b.zp))
        pre = fma32(cast(torch.Tensor, a.values), ratio_a, fma32(cast(torch.Tensor, b.values), ratio_b, fixed))
        return requantize(pre, torch.zeros((), dtype=torch.float32), *self.qrange)


class QLinearMul(QLinearOp):
    """com.microsoft ``QLinearMul`` as MLAS computes it:
    ``round(float((a - za) * (b - zb)) * (sa * sb / sc) + zc)``, saturated."""

    def evaluate(self, inputs: Sequence[Quantised], out: Quantised) -> torch.Tensor:
        """Quantised product as float32."""
        a, b = inputs
        product = (a.centered() * b.centered()).to(torch.float32)
        pre = product * (f32(a.scale) * f32(b.scale) / f32(out.scale)) + f32(out.zp)
        return requantize(pre, torch.zeros((), dtype=torch.float32), *self.qrange)


class QLinearGlobalAveragePool(QLinearOp):
    """com.microsoft ``QLinearGlobalAveragePool``: exact sum of ``x - x_zp`` over the image,
    requantised by ``x_scale / (y_scale * image_size)``."""

    operand_count, arity = 1, 5

    def __init__(self, operands: Operands, channels_last: bool, qrange: tuple[int, int]) -> None:
        super().__init__(operands, qrange)
        self.channels_last = channels_last

    def evaluate(self, inputs: Sequence[Quantised], out: Quantised) -> torch.Tensor:
        """Quantised means, spatial dims kept as 1."""
        (x,) = inputs
        rank = cast(torch.Tensor, x.values).dim()
        dims = tuple(range(1, rank - 1)) if self.channels_last else tuple(range(2, rank))
        acc = x.centered().sum(dim=dims, keepdim=True)
        size = math.prod(cast(torch.Tensor, x.values).shape[d] for d in dims)
        scale = f32(x.scale) / (f32(out.scale) * float(size))
        return requantize(acc.to(torch.float32) * scale, f32(out.zp), *self.qrange)


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


class QLinearAveragePool(QLinearOp):
    """com.microsoft ``QLinearAveragePool`` (2-D) as ORT computes it: dequantise to float32, sum
    each window in order, divide by the element count, ``round(y / y_scale + y_zp)`` saturated."""

    operand_count, arity = 1, 5

    def __init__(self, operands: Operands, spec: PoolSpec, channels_last: bool, qrange: tuple[int, int]) -> None:
        super().__init__(operands, qrange)
        if len(spec.kernel) != 2:
            raise NotImplementedError(f"QLinearAveragePool with a {len(spec.kernel)}-D kernel is not implemented")
        self.spec, self.channels_last = spec, channels_last

    def evaluate(self, inputs: Sequence[Quantised], out: Quantised) -> torch.Tensor:
        """Quantised averages as float32."""
        value = inputs[0].dequantised()
        value = value.movedim(-1, 1) if self.channels_last else value
        sums, counts = window_sums(value, self.spec)
        if self.spec.count_include_pad:
            counts = torch.full_like(counts, float(math.prod(self.spec.kernel)))
        pre = sums / counts / f32(out.scale) + f32(out.zp)
        result = requantize(pre, torch.zeros((), dtype=torch.float32), *self.qrange)
        return result.movedim(1, -1) if self.channels_last else result


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
            value = f32(x_scale) * centered(cast(torch.Tensor, x), x_zp).to(torch.float32)
            parts.append(requantize(value / f32(y_scale), f32(y_zp), *self.qrange))
        return torch.cat(parts, dim=self.axis)


class QLinearLookup(QLinearOp):
    """com.microsoft ``QLinearSigmoid``/``QLinearLeakyRelu``: ``quantize(f(x_scale * (x - x_zp)))``
    (ORT builds the same values into a 256-entry table)."""

    operand_count, arity = 1, 5

    def __init__(self, operands: Operands, function: str, alpha: float, qrange: tuple[int, int]) -> None:
        super().__init__(operands, qrange)
        self.function, self.alpha = function, alpha

    def evaluate(self, inputs: Sequence[Quantised], out: Quantised) -> torch.Tensor:
        """Quantised activation as float32."""
        value = inputs[0].dequantised()
        if self.function == "QLinearSigmoid":
            value = torch.sigmoid(value)
        else:
            value = torch.where(value >= 0, value, torch.tensor(self.alpha, dtype=torch.float32) * value)
        return requantize(value / f32(out.scale), f32(out.zp), *self.qrange)
