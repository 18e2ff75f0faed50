"""ONNX Runtime's CPU float kernels (MLAS) emulated bit for bit, for quantised graphs.

In a float graph the twin may differ from ONNX Runtime by a few float32 ulps.  In a quantised graph
it may not: ``DynamicQuantizeLinear`` takes its scale from the tensor's min and max, so one ulp off
in the extreme element moves the scale, every element near a rounding boundary moves by a quantum,
and the next ``ConvInteger``/``MatMulInteger`` carries that on (efficientnet_b0 int8-dynamic: the
twin's torch.sigmoid differs from ORT's in ~44% of the elements by <= 2 ulps, and only 31 of 64
argmaxes agreed).  The ops here replace onnx2torch's converters *only in graphs that contain a
quantised op* (:data:`.quant.QUANT_OP_DOMAINS`); float graphs keep onnx2torch's faster modules.

* ``Sigmoid``: ``MlasComputeLogistic``, Eigen's rational approximation
  ``clamp(x, -18, 18) -> p(x)/q(x) + 0.5``, with the polynomials evaluated by fused multiply-adds
  (``MlasLogisticKernelFma3``, the kernel on every x86-64 CPU with AVX2/FMA: onnxruntime
  ``core/mlas/lib/x86_64/LogisticKernelFma3.S``) and the result clamped below at 0.  Backward: the
  derivative of the logistic function, ``s * (1 - s)``.
* ``GlobalAveragePool``: ``MlasPoolGlobalKernel``: per channel, four float32 lane sums over the
  elements in memory order (lane ``j`` adds elements ``j, j+4, ...``), reduced as
  ``(l0 + l2) + (l1 + l3)`` (``MlasReduceAddFloat32x4``), then the ``size % 4`` tail elements one by
  one, then divided by ``float(size)``.  Backward: that of the mean.
* ``AveragePool`` (2-D, no ``ceil_mode``/dilations): ``MlasPool2DVectorKernel`` (horizontal stride
  <= 2, kernel <= 32) sums each window column by column (each column top to bottom, then the column
  sums left to right); ``MlasPool2DKernel`` (otherwise) and the NCHWc pooling kernel sum row-major
  from 0.  Then one division by the element count.  Backward: that of the average.
* ``BatchNormalization`` (inference, constant statistics): ORT's Eigen kernel folds the statistics
  in float32 as ``s = scale * (1 / sqrt(var + eps))``, ``b = bias - mean * s`` and computes
  ``x * s + b`` with two roundings (torch's kernel folds in another order and fuses the
  multiply-add).  Backward: exact, it is the same affine map.

ORT's default session (``ORT_ENABLE_ALL``) also runs its NCHWc transformer on CPUs with AVX2
(channel blocks of 8) or AVX-512 (16): a ``MaxPool``/``AveragePool`` whose channel count is a
multiple of the block runs the NCHWc pooling kernel (row-major sums), and a ``BatchNormalization``
reading such a pool becomes a depthwise 1x1 NCHWc ``Conv`` with ``s = scale / sqrt(var + eps)``
(a division, not Eigen's reciprocal).  The twin follows the default session, which is what advaudit
runs and checks against; ``ORT_DISABLE_ALL`` keeps the plain kernels above.

Not emulated (yet): ``LayerNormalization`` (ORT 1.31 takes the mean from a float64 sum and computes
``fma((x - mean) * inv_std, scale, bias)`` in float32, but its ``inv_std`` is within 2 ulps of
``1 / sqrt(var + eps)`` by a rule not pinned down), ``Erf``, ``Softmax``, ``ReduceMean`` and float
``Conv``/``MatMul`` (MLAS's blocked FMA accumulation order).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from onnx2torch.node_converters.registry import (
    _CONVERTER_REGISTRY,
    OperationDescription,
)
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OnnxToTorchModule,
    OperationConverterResult,
)
from torch import nn

from .ste import install, schema_versions, straight_through

__all__ = [
    "EigenBatchNorm",
    "MlasAveragePool",
    "MlasGlobalAveragePool",
    "MlasSigmoid",
    "mlas_global_average",
    "mlas_logistic",
    "nchwc_block_size",
    "register",
    "sequential_sum",
]

# MlasLogisticConstants (onnxruntime core/mlas/lib/logistic.cpp), as float32.
_LOGISTIC_RANGE = 18.0
_ALPHA = (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03, 2.48287947061529e-01)
_BETA = (
    6.10247389755681e-13,
    5.76102136993427e-09,
    6.29106785017040e-06,
    1.70198817374094e-03,
    1.16817656904453e-01,
    9.93151921023180e-01,
)


def _horner_fma(x2: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    """``((c0 * x2 + c1) * x2 + c2) ...`` in float32 with each step one fused multiply-add.

    A float32 product is exact in float64 and the float64 sum is rounded once more to float32;
    that double rounding differs from a true FMA only when the float64 sum lies exactly halfway
    between two float32 values, which these coefficients make vanishingly rare."""
    wide = x2.to(torch.float64)
    acc = torch.full_like(wide, float(np.float32(coefficients[0])))
    narrow = torch.empty_like(x2)
    for c in coefficients[1:]:  # in place: this runs on every activation of the graph
        acc.mul_(wide).add_(float(np.float32(c)))
        narrow.copy_(acc)  # round to float32 ...
        acc.copy_(narrow)  # ... and back, exactly
    return narrow


def mlas_logistic(x: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime's CPU ``Sigmoid`` (MlasLogisticKernelFma3) on a float32 tensor, bit for bit."""
    x = x.to(torch.float32).clamp(-_LOGISTIC_RANGE, _LOGISTIC_RANGE)
    x2 = x * x
    p = x * _horner_fma(x2, _ALPHA)
    q = _horner_fma(x2, _BETA)
    return torch.clamp(p / q + 0.5, min=0.0)


class MlasSigmoid(nn.Module, OnnxToTorchModule):
    """``Sigmoid`` with ONNX Runtime's forward values and the logistic function's gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:  # MLAS has float32 kernels only; ORT's others are exact-ish
            return torch.sigmoid(x)
        value = mlas_logistic(x.detach())
        return straight_through(x, value, value * (1.0 - value))


def sequential_sum(t: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``t`` summed along ``dim`` one element at a time, each partial sum rounded to ``t``'s dtype
    (a C loop's order; torch's own sums use trees and wider accumulators)."""
    # numpy's accumulate is that loop, in C (a GPU tensor makes the round trip: still far faster
    # than one kernel launch per element)
    out = np.add.accumulate(t.detach().movedim(dim, -1).contiguous().cpu().numpy(), axis=-1)[..., -1]
    return torch.from_numpy(np.ascontiguousarray(out)).to(t.device)


def mlas_global_average(x: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime's CPU ``GlobalAveragePool`` (MlasPoolGlobalKernel) on a float32 NC... tensor."""
    flat = x.to(torch.float32).reshape(*x.shape[:2], -1)
    size = flat.shape[-1]
    body = size - size % 4
    lanes = flat[..., :body].reshape(*flat.shape[:2], -1, 4)
    acc = torch.zeros_like(flat[..., :4]) if body == 0 else sequential_sum(lanes, dim=2)
    total = (acc[..., 0] + acc[..., 2]) + (acc[..., 1] + acc[..., 3])
    for k in range(body, size):
        total = total + flat[..., k]
    return (total / float(size)).reshape(*x.shape[:2], *([1] * (x.dim() - 2)))


class MlasGlobalAveragePool(nn.Module, OnnxToTorchModule):
    """``GlobalAveragePool`` with ONNX Runtime's forward values and the mean's gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        if x.dtype != torch.float32:
            return mean
        with torch.no_grad():
            value = mlas_global_average(x)
        return straight_through(mean, value)


class MlasAveragePool(nn.Module, OnnxToTorchModule):
    """2-D ``AveragePool`` with ONNX Runtime's summation order and the average's gradient."""

    def __init__(
        self, kernel: tuple, strides: tuple, pads: tuple, count_include_pad: bool, nchwc: bool = False
    ) -> None:
        super().__init__()
        self.kernel, self.strides, self.pads, self.count_include_pad = kernel, strides, pads, count_include_pad
        # MLAS's vector kernel sums by column; its generic kernel and the NCHWc kernel row-major.
        self.by_column = not nchwc and strides[1] <= 2 and max(kernel) <= 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (top, left, bottom, right) = self.kernel, self.strides, self.pads
        pad = (left, right, top, bottom)
        exact = F.avg_pool2d(F.pad(x, pad), (kh, kw), (sh, sw))  # the gradient (count fixed below)
        ones = F.pad(torch.ones_like(x[:1, :1]), pad)
        counts = torch.round(F.avg_pool2d(ones, (kh, kw), (sh, sw)) * (kh * kw))
        count = torch.full_like(counts, float(kh * kw)) if self.count_include_pad else counts
        exact = exact * (kh * kw) / count
        if x.dtype != torch.float32:  # MLAS pools float32 only
            return exact
        with torch.no_grad():
            xp = F.pad(x.detach().to(torch.float32), pad)  # zeros: adding them is exact
            oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1

            def tap(i: int, j: int) -> torch.Tensor:
                return xp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]

            total: torch.Tensor | None = None
            if self.by_column:  # column sums first, then across the columns
                for j in range(kw):
                    column = tap(0, j)
                    for i in range(1, kh):
                        column = column + tap(i, j)
                    total = column if total is None else total + column
            else:
                total = torch.zeros_like(tap(0, 0))
                for i in range(kh):
                    for j in range(kw):
                        total = total + tap(i, j)
            assert total is not None  # kh, kw >= 1
            value = total / count
        return straight_through(exact, value)


def _average_pool(node: OnnxNode, graph: OnnxGraph) -> nn.Module | None:
    """:class:`MlasAveragePool` for a plain 2-D node, else None (onnx2torch's converter)."""
    attrs = node.attributes
    kernel = tuple(attrs.get("kernel_shape", ()))
    if len(kernel) != 2 or attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", (1, 1))):
        return None
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    pads = tuple(attrs.get("pads", (0, 0, 0, 0))) if attrs.get("auto_pad", "NOTSET") == "NOTSET" else (0, 0, 0, 0)
    strides = tuple(attrs.get("strides", (1, 1)))
    return MlasAveragePool(kernel, strides, pads, bool(attrs.get("count_include_pad", 0)), _runs_nchwc(node, graph))


def nchwc_block_size() -> int:
    """ORT's NCHWc channel block on this CPU (``MlasNchwcGetBlockSize``): 16 with AVX-512, 8 with
    AVX2, 0 where the NCHWc transformer does not run."""
    capability = torch.backends.cpu.get_cpu_capability()
    return 16 if capability.startswith("AVX512") else 8 if capability == "AVX2" else 0


def _channels(name: str, graph: OnnxGraph) -> int | None:
    info = graph.value_info.get(name)
    if info is None or not info.type.tensor_type.HasField("shape") or len(info.type.tensor_type.shape.dim) < 2:
        return None
    dim = info.type.tensor_type.shape.dim[1]
    return dim.dim_value if dim.HasField("dim_value") else None


def _runs_nchwc(node: OnnxNode, graph: OnnxGraph) -> bool:
    """Whether ORT's default session runs this 2-D ``MaxPool``/``AveragePool`` as an NCHWc op."""
    block, channels = nchwc_block_size(), _channels(node.input_values[0], graph)
    return bool(block) and channels is not None and channels % block == 0


class EigenBatchNorm(nn.Module, OnnxToTorchModule):
    """Inference ``BatchNormalization`` as ORT's CPU kernel computes it: ``x * s + b``, rounded twice."""

    scale: torch.Tensor
    bias: torch.Tensor

    def __init__(
        self, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray, epsilon: float,
        nchwc: bool = False,
    ) -> None:
        super().__init__()
        f32 = np.float32
        std = np.sqrt(var.astype(f32) + f32(epsilon))
        # Eigen: scale * (1 / std); the NCHWc transformer's depthwise conv weight: scale / std.
        new_scale = scale.astype(f32) / std if nchwc else (f32(1.0) / std) * scale.astype(f32)
        new_bias = bias.astype(f32) - mean.astype(f32) * new_scale
        self.register_buffer("scale", torch.from_numpy(np.ascontiguousarray(new_scale, dtype=f32)))
        self.register_buffer("bias", torch.from_numpy(np.ascontiguousarray(new_bias, dtype=f32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        product = x * self.scale.to(x.dtype).view(shape)  # two ops, so that nothing fuses the rounding
        return product + self.bias.to(x.dtype).view(shape)


def _constant_array(name: str, graph: OnnxGraph) -> np.ndarray | None:
    if name in graph.initializers:
        return numpy_helper.to_array(graph.initializers[name].proto)
    return None


def _batch_norm(node: OnnxNode, graph: OnnxGraph) -> nn.Module | None:
    """:class:`EigenBatchNorm` for an inference node with constant statistics, else None."""
    found = [_constant_array(name, graph) for name in node.input_values[1:5]]
    arrays = [a for a in found if a is not None]
    if len(node.output_values) != 1 or len(arrays) != 4:
        return None
    if node.attributes.get("training_mode", 0) or any(a.dtype != np.float32 for a in arrays):
        return None
    producer = _producer(node.input_values[0], graph)
    pooled = producer is not None and producer.operation_type in ("MaxPool", "AveragePool")
    nchwc = pooled and _runs_nchwc(producer, graph)
    scale, bias, mean, var = arrays
    return EigenBatchNorm(scale, bias, mean, var, float(node.attributes.get("epsilon", 1e-5)), nchwc)


def _producer(name: str, graph: OnnxGraph) -> OnnxNode | None:
    """The node that computes ``name``, looking through single-input ``Concat``/``Identity``."""
    for node in graph.nodes.values():
        if name in node.output_values:
            if node.operation_type in ("Concat", "Identity") and len(node.input_values) == 1:
                return _producer(node.input_values[0], graph)
            return node
    return None


_QUANTISED: weakref.WeakKeyDictionary[OnnxGraph, bool] = weakref.WeakKeyDictionary()
_ORIGINALS: dict[OperationDescription, Callable] = {}


def _quantised(graph: OnnxGraph) -> bool:
    """Whether the graph has a quantised op (computed once per graph)."""
    if graph not in _QUANTISED:
        from .quant import QUANT_OP_DOMAINS  # late import, as ste does

        domains = {(("" if n.domain in ("", "ai.onnx") else n.domain), n.op_type) for n in graph.proto.node}
        _QUANTISED[graph] = bool(domains & QUANT_OP_DOMAINS)
    return _QUANTISED[graph]


def _converter(key: OperationDescription, build: Callable[[OnnxNode, OnnxGraph], nn.Module | None]) -> Callable:
    """Our module in a quantised graph (where ``build`` gives one), onnx2torch's converter elsewhere."""

    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        original = _ORIGINALS.get(key)
        # The original runs first even when replaced: quant's pool wrapper records output ranks.
        result = None if original is None else original(node, graph)
        module = build(node, graph) if result is None or _quantised(graph) else None
        if module is None:
            if result is None:
                raise NotImplementedError(f"{node.operation_type} with these attributes is not implemented")
            return result
        inputs = node.input_values[:1] if isinstance(module, EigenBatchNorm) else node.input_values
        return OperationConverterResult(module, OnnxMapping(inputs=tuple(inputs), outputs=node.output_values))

    return convert


def register() -> None:
    """Install the converters (idempotent): MLAS emulation in quantised graphs, onnx2torch's elsewhere."""
    builders: tuple[tuple[str, Callable, int], ...] = (
        ("Sigmoid", lambda node, graph: MlasSigmoid(), 6),
        ("GlobalAveragePool", lambda node, graph: MlasGlobalAveragePool(), 1),
        ("BatchNormalization", _batch_norm, 9),
        ("AveragePool", _average_pool, 7),
    )
    for op_type, build, since in builders:
        for version in schema_versions(op_type, since=since):
            key = OperationDescription(domain="", operation_type=op_type, version=version)
            current = _CONVERTER_REGISTRY.get(key)
            if current is not None and not getattr(current, "_mlas", False):  # onnx2torch's, quant's, newer's
                _ORIGINALS[key] = current
            converter = _converter(key, build)
            converter._mlas = True  # type: ignore[attr-defined]
            install(op_type, [version], converter)
