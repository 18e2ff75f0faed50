"""ONNX graph -> differentiable torch twin (onnx2torch plus advaudit's own converters).

:func:`to_torch` is the one entry point:

1. :mod:`.normalize` rewrites a *copy* of the graph so that whatever a common exporter writes
   converts (opset upgrade, constant folding and shape inference).  ONNX Runtime keeps running the
   original file: the twin only has to agree with it, which :class:`~advaudit.models.OnnxModel`
   checks on a probe batch.
2. :mod:`.quant` registers converters for quantised graphs (QDQ and the QLinear*/Integer ops) whose
   forward follows ONNX semantics exactly and whose backward is straight-through.
3. :mod:`.ste` replaces onnx2torch's converters for piecewise-constant ops (``Round``, ``Floor``,
   ``Ceil``, ``Sign``, float -> integer -> float casts) by straight-through versions (BPDA).
4. :mod:`.newer` converts operator versions from opsets 18-22 (what the dynamo exporter writes)
   that onnx2torch does not know yet.
5. :mod:`.mlas` emulates ONNX Runtime's float kernels bit for bit where a quantised graph needs
   it (``Sigmoid``, ``GlobalAveragePool``, ``AveragePool``, ``BatchNormalization``): a float ulp
   there moves a ``DynamicQuantizeLinear`` scale.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from .logits import LogitsSource, find_logits, with_extra_output, with_outputs
from .normalize import candidates

__all__ = ["Converted", "LogitsSource", "find_logits", "to_torch", "with_extra_output", "with_outputs"]


@dataclass
class Converted:
    """One torch twin of a graph: the module, how the graph was normalised, and the ops whose
    gradient is straight-through (empty for a float graph)."""

    module: torch.nn.Module
    normalised: str
    straight_through: list[str] = field(default_factory=list)


def register() -> None:
    """Add advaudit's converters to onnx2torch's registry (idempotent)."""
    from . import mlas, newer, quant, ste

    quant.register()
    ste.register()
    newer.register()
    mlas.register()


def to_torch(proto: Any) -> Iterator[Converted | Exception]:
    """Torch twins of ``proto``, best candidate first, or the exception each candidate raised.

    The caller checks each against ONNX Runtime and keeps the first that agrees.
    """
    from onnx2torch import convert

    from .ste import straight_through_ops

    register()
    logging.getLogger("onnx2torch").setLevel(logging.ERROR)
    for how, graph in candidates(proto):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = convert(graph)
        except Exception as exc:  # onnx2torch raises NotImplementedError, KeyError, ... per op
            yield exc
            continue
        module = module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        yield Converted(module, how, straight_through_ops(graph))
