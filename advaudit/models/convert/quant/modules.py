"""torch modules for the quantised operators of the ONNX domain, and their common base.

:class:`QuantModule` keeps constant inputs (weights, scales, zero points) as buffers and takes the
run-time inputs as ``forward`` arguments; each subclass's ``compute`` follows ONNX Runtime's CPU
kernels (see :mod:`advaudit.models.convert.quant`).  The com.microsoft operators are in :mod:`.contrib`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, cast

import torch
from onnx2torch.utils.common import OnnxToTorchModule
from torch import nn

from .numerics import (
    ACCUMULATE,
    ConvSpec,
    axis_param,
    centered,
    channel_param,
    conv,
    conv_transpose,
    f32,
    filter_param,
    requantize,
    snap,
)


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

    def compute(self, *inputs: Any, **kwargs: Any) -> Any:
        """The op itself (subclasses: their own signature, the graph's operands in order)."""
        raise NotImplementedError



@dataclass(frozen=True)
class Quantised:
    """One quantised operand as the graph gives it: the values (float32 holding integers; None for the
    output's parameters), their scale and their zero point."""

    values: Optional[torch.Tensor]
    scale: torch.Tensor
    zp: Optional[torch.Tensor]

    def centered(self) -> torch.Tensor:
        """``values - zp`` exactly (see :func:`~.numerics.centered`)."""
        return centered(cast(torch.Tensor, self.values), self.zp)

    def dequantised(self) -> torch.Tensor:
        """``scale * (values - zp)`` in float32, as ORT dequantises."""
        return f32(self.scale) * self.centered().to(torch.float32)


class QLinearOp(QuantModule):
    """Base of the operators whose graph inputs are ``(x, x_scale, x_zp)`` per operand followed by the
    output's ``(y_scale, y_zp)``: ``compute`` groups them into :class:`Quantised` and calls
    :meth:`evaluate`; ``qrange`` is the output type's saturation range."""

    operand_count = 2
    arity = 8  # 3 * operand_count + 2

    def __init__(self, operands: Operands, qrange: tuple[int, int]) -> None:
        super().__init__(operands)
        self.qrange = qrange

    def compute(self, *inputs: Optional[torch.Tensor]) -> torch.Tensor:
        """Group the operands and run :meth:`evaluate`."""
        count = 3 * self.operand_count
        groups = [
            Quantised(inputs[i], cast(torch.Tensor, inputs[i + 1]), inputs[i + 2]) for i in range(0, count, 3)
        ]
        return self.evaluate(groups, Quantised(None, cast(torch.Tensor, inputs[count]), inputs[count + 1]))

    def evaluate(self, inputs: Sequence[Quantised], out: Quantised) -> torch.Tensor:
        """The op on its grouped operands (subclasses)."""
        raise NotImplementedError


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
        scale = axis_param(f32(scale), x.dim(), self.axis, self.block, size)
        zero_point = axis_param(f32(zero_point), x.dim(), self.axis, self.block, size)
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
        shifted = centered(x, axis_param(zero_point, rank, self.axis, self.block, size))
        value = shifted.to(torch.float32) * axis_param(f32(scale), rank, self.axis, self.block, size)
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
        weight = centered(w, filter_param(w_zp, w.dim()))
        return snap(conv(centered(x, x_zp), weight, None, self.spec))


class MatMulInteger(QuantModule):
    """``(a - a_zp) @ (b - b_zp)`` as an exact integer (float64) tensor; ``a_zp`` may be per row."""

    arity = 4

    def compute(
        self, a: torch.Tensor, b: torch.Tensor, a_zp: Optional[torch.Tensor], b_zp: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The int32 product, as float64."""
        if a_zp is not None and a_zp.dim() == 1 and a_zp.numel() > 1:
            a_zp = a_zp.unsqueeze(-1)
        return snap(centered(a, a_zp) @ centered(b, b_zp))


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
        weight = centered(w, filter_param(w_zp, w.dim()))
        acc = snap(conv(centered(x, x_zp), weight, None, self.spec))
        if bias is not None:
            acc = acc + channel_param(bias.to(ACCUMULATE), acc.dim())
        multiplier = channel_param(f32(x_scale) * f32(w_scale) / f32(y_scale), acc.dim())
        return requantize(acc.to(torch.float32) * multiplier, f32(y_zp), *self.qrange)


class QLinearMatMul(QLinearOp):
    """ONNX ``QLinearMatMul``: exact integer product requantised by ``a_scale * b_scale / y_scale``."""

    def evaluate(self, inputs: Sequence[Quantised], out: Quantised) -> torch.Tensor:
        """Quantised output as float32."""
        a, b = inputs
        acc = snap(a.centered() @ b.centered())
        multiplier = f32(a.scale) * f32(b.scale) / f32(out.scale)
        return requantize(acc.to(torch.float32) * multiplier, f32(out.zp), *self.qrange)


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
