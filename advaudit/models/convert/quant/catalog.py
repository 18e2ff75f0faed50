"""The catalogue of quantised ONNX operators converted here, and the ONNX element types they use.

Pure data (no torch modules): the op lists that :mod:`.converters` registers and that
:mod:`advaudit.models.convert.ste` reads to tell straight-through ops, and the saturation range and
torch dtype of each ONNX element type.
"""

from __future__ import annotations

from typing import Mapping

import torch
from onnx import TensorProto

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

#: Saturation range of each integer element type.
QRANGE: Mapping[int, tuple[int, int]] = {
    TensorProto.UINT8: (0, 255),
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT16: (-32768, 32767),
    TensorProto.INT32: (-(2**31), 2**31 - 1),
    TensorProto.UINT4: (0, 15),
    TensorProto.INT4: (-8, 7),
    **({TensorProto.UINT2: (0, 3), TensorProto.INT2: (-2, 1)} if hasattr(TensorProto, "INT2") else {}),
}
FLOAT_TYPES: Mapping[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16,
}
WIDE_INTEGERS = (TensorProto.INT64, TensorProto.UINT32, TensorProto.UINT64)
