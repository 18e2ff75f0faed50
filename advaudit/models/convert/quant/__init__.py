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

The code is split by concern: :mod:`.catalog` (which ops, which element types), :mod:`.numerics`
(pure tensor functions), :mod:`.modules` and :mod:`.contrib` (the torch modules of the ONNX and the
com.microsoft ops) and :mod:`.converters` (the onnx2torch converters and :func:`register`).
"""

from .catalog import (
    DYNAMIC_WEIGHT_OPS,
    MS_DOMAIN,
    QUANT_OP_DOMAINS,
    QUANT_OPS,
    RANK_FROM_KERNEL_OPS,
    STRAIGHT_THROUGH_QUANT_OPS,
)
from .converters import is_straight_through_quant_node, register

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
