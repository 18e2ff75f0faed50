"""Numerics shared by the quantised-op modules: pure functions on tensors.

Integer arithmetic is done exactly in float64 (:data:`ACCUMULATE`), requantisation follows MLAS's
float32 order with a straight-through gradient, and ``conv``/``conv_transpose`` implement ONNX's
padding rules with torch's functional convolutions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, TypeVar

import torch
import torch.nn.functional as F
from onnx2torch.onnx_node import OnnxNode

from ..ste import straight_through

ACCUMULATE = torch.float64  # dtype of integer sums: exact to 2**53
CONV_FNS: Mapping[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T_FNS: Mapping[int, Callable[..., torch.Tensor]] = {
    1: F.conv_transpose1d,
    2: F.conv_transpose2d,
    3: F.conv_transpose3d,
}


def f32(t: Optional[torch.Tensor]) -> torch.Tensor:
    """``t`` as float32 (a missing zero point is 0)."""
    return torch.zeros((), dtype=torch.float32) if t is None else t.to(torch.float32)


def centered(q: torch.Tensor, zero_point: Optional[torch.Tensor]) -> torch.Tensor:
    """``q - zero_point`` in the accumulation dtype (exact for integer inputs)."""
    q = q.to(ACCUMULATE)
    return q if zero_point is None else q - zero_point.to(q.device, ACCUMULATE)


def snap(acc: torch.Tensor) -> torch.Tensor:
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


MaybeTensor = TypeVar("MaybeTensor", torch.Tensor, Optional[torch.Tensor])
"""A parameter the graph may leave out: the reshaping helpers return None exactly for None."""


def axis_param(param: MaybeTensor, rank: int, axis: int, block: int, size: int) -> MaybeTensor:
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


def channel_param(param: MaybeTensor, rank: int) -> MaybeTensor:
    """A per-output-channel parameter (shape ``(M,)``) shaped ``(1, M, 1, ...)`` for an NC... tensor."""
    return _per_channel(param, (1, -1, *([1] * (rank - 2))))


def filter_param(param: MaybeTensor, rank: int) -> MaybeTensor:
    """A per-output-channel parameter shaped ``(M, 1, ...)`` to broadcast against conv filters."""
    return _per_channel(param, (-1, *([1] * (rank - 1))))


def _per_channel(param: MaybeTensor, shape: tuple[int, ...]) -> MaybeTensor:
    """``param`` reshaped to ``shape``; a scalar (one element) stays a scalar, None stays None."""
    if param is None or param.numel() == 1:
        return None if param is None else param.reshape(())
    return param.reshape(shape)


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
    return CONV_FNS[rank](x, weight, bias, stride=strides, padding=padding, dilation=dilations, groups=spec.group)


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
    return CONV_T_FNS[rank](
        x,
        weight,
        bias,
        stride=strides,
        padding=[a for a, _ in pairs],
        output_padding=spec.output_padding or (0,) * rank,
        groups=spec.group,
        dilation=dilations,
    )


def fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` rounded once to float32 (a fused multiply-add, as MLAS's AVX2 kernels)."""
    return (a.to(torch.float64) * b.to(torch.float64) + c.to(torch.float64)).to(torch.float32)

