"""Rewrite a copy of a graph so that what common exporters write converts to torch.

* Graphs below opset :data:`MIN_OPSET` are upgraded with ``onnx.version_converter`` (onnx2torch
  implements most operators from opset 11 on).
* ``onnxslim`` folds constants (weight ``DequantizeLinear`` chains, shape arithmetic), infers
  shapes, drops dead nodes and fuses standard patterns (Conv+BN, MatMul+Add -> Gemm, Pad+Conv).

Each step is best effort: a step that fails leaves the graph as it was, and :func:`candidates`
also yields the untouched graph, so normalisation can only add graphs that convert.  None of this
changes what ONNX Runtime runs: the twin is checked against the original file.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any, Iterator

MIN_OPSET = 13


def opset_of(proto: Any) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=MIN_OPSET)


def upgrade_opset(proto: Any) -> Any:
    """``proto`` converted to :data:`MIN_OPSET` when older (unchanged if the converter fails)."""
    if opset_of(proto) >= MIN_OPSET:
        return proto
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception:  # the converter has no adapter for some op: keep the original
        return proto


def slim(proto: Any) -> Any | None:
    """``onnxslim``'s constant folding, shape inference and fusions, or None if it fails."""
    try:
        import onnxslim
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    logging.getLogger("onnxslim").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = onnxslim.slim(copy.deepcopy(proto))
    except Exception:  # onnxslim rejects some valid graphs; the original is still a candidate
        return None
    return out if out is not None and len(out.graph.node) else None


def candidates(proto: Any) -> Iterator[tuple[str, Any]]:
    """``(how, graph)`` pairs to try converting, best first: normalised, then as written."""
    upgraded = upgrade_opset(proto)
    slimmed = slim(upgraded)
    if slimmed is not None:
        yield ("onnxslim" + (f", opset {opset_of(proto)}->{MIN_OPSET}" if upgraded is not proto else ""), slimmed)
    if upgraded is not proto:
        yield (f"opset {opset_of(proto)}->{MIN_OPSET}", upgraded)
    yield ("as written", proto)
