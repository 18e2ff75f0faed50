"""``advaudit info``: what a model is, how advaudit sees it, and how it does on clean data."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from .data import PreparedData
from .models import Model

# ONNX tensor types that hold shapes, axes and indices rather than weights (INT32, INT64, BOOL)
_NON_WEIGHT_TYPES = frozenset({6, 7, 9})


def clean_accuracy(
    model: Model, data: PreparedData, batch_size: int = 256, progress: Callable[[int, int], None] | None = None
) -> tuple[float, float]:
    """Accuracy in the deployment runtime and its throughput in images per second.

    ``progress(done, total)`` is called after every batch (the predictions are those of one
    ``model.predict(data.x, batch_size)`` call).  The inputs are converted a batch at a time
    (:attr:`~advaudit.data.PreparedData.view`)."""
    start = time.perf_counter()
    labels = []
    x = data.view
    for i in range(0, len(x), batch_size):
        labels.append(model.predict(x[i : i + batch_size], batch_size=batch_size).labels)
        if progress is not None:
            progress(min(i + batch_size, len(x)), len(x))
    pred = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    elapsed = time.perf_counter() - start
    assert data.y is not None
    return float(np.mean(pred == data.y)), len(data) / max(elapsed, 1e-9)


def parameter_count(model: Model) -> tuple[int | None, str]:
    """``(count, source)``: the parameters of the torch module behind the gradients (the ONNX twin or
    the TorchScript module), else of the TorchScript module as loaded, else the elements of the ONNX
    file's weight initializers (all but integer/bool tensors, which hold shapes and indices);
    ``(None, "unknown")`` when none of these is at hand."""
    import torch

    module = model.torch_module()
    count = sum(int(p.numel()) for p in module.parameters()) if module is not None else 0
    if count:  # a quantised twin keeps its integer weights as buffers: counted from the file below
        return count, "torch module"
    loaded = getattr(model, "_module", None)  # TorchScript without working gradients
    if isinstance(loaded, torch.nn.Module):
        return sum(int(p.numel()) for p in loaded.parameters()), "TorchScript module"
    proto = getattr(model, "_proto", None)  # ONNX without a differentiable twin
    if proto is not None:
        return onnx_weight_count(proto), "ONNX initializers"
    return None, "unknown"


_QUANT_WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "DequantizeLinear": (0,), "QLinearConv": (3,), "QLinearMatMul": (3,), "ConvInteger": (1,), "MatMulInteger": (1,),
}
"""Where quantised graphs keep their integer weights (the other integer tensors are scales' zero points,
shapes and indices)."""


def onnx_weight_count(proto: Any) -> int:
    """Elements of an ONNX graph's weight tensors: initializers (subgraphs included) and
    ``Constant`` nodes, except integer and bool tensors."""
    total = 0
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        tensors = list(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.HasField("t"):
                    tensors.append(attr.t)
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
        quantised = {node.input[i] for node in graph.node for i in _QUANT_WEIGHT_INPUTS.get(node.op_type, ())
                     if i < len(node.input)}
        scales = {name for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                  for name in node.input[1:]}
        total += sum(math.prod(int(d) for d in t.dims) for t in tensors
                     if (t.data_type not in _NON_WEIGHT_TYPES or t.name in quantised) and t.name not in scales)
    return total


def model_info(
    model: Model,
    data: PreparedData | None = None,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """A JSON-able description of ``model`` with its parameter count; with ``data``, clean accuracy
    and throughput too (``progress(done, total)`` per batch)."""
    count, source = parameter_count(model)
    info: dict[str, Any] = {"model": {**model.describe(), "parameters": count, "parameters_source": source}}
    if data is not None:
        acc, ips = clean_accuracy(model, data, batch_size, progress)
        info["data"] = {**data.dataset.describe(), "batch_size": batch_size}
        info["clean_accuracy"] = acc
        info["throughput_images_per_s"] = ips
    return info
