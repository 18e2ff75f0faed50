"""The reduced-precision search copy of a model (see :mod:`advaudit.models.precision`).

:func:`build_search_copy` makes the bfloat16, channels-last copy of a model's torch module and keeps it
only if it agrees with the float32 path on a probe batch; :func:`exact_where_moved` restores exact
values on the rows a search thinks are adversarial, so success is never decided on an approximation.
They live apart from :class:`~advaudit.models.base.Model` to keep the model interface short.
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..errors import first_line
from . import precision as _precision

if TYPE_CHECKING:
    from .base import Model

__all__ = ["build_search_copy", "exact_where_moved", "flat_outputs", "reduced_forward"]


def flat_outputs(out: Any, n: int) -> torch.Tensor:
    """A network's output as (n, classes): the first output of a tuple, flattened per sample."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.reshape(n, -1)




def build_search_copy(model: Model) -> tuple[torch.nn.Module | None, str]:
    """``(module, note)``: the bf16 copy of ``model.torch_module()`` to search with, or None and why not
    (the note is empty where fp32 was asked for or the device has no native bf16)."""
    if _precision.resolve(model._precision_asked, model.device) != "bf16":
        return None, ""
    if not (model.reduced_search and model.gradients.available) or model.torch_batch is not None:
        return None, "no plain float network to copy (quantised, wrapped or fixed-batch); searching in fp32"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = copy.deepcopy(model.torch_module())
            if module is None:
                raise ValueError("no torch module")
            module = module.to(dtype=torch.bfloat16)
            if model.input_shape is not None and len(model.input_shape) == 3:
                module = module.to(memory_format=torch.channels_last)
            probe = torch.from_numpy(model.probe_inputs(16, seed=5)).to(model.device)
            ref = model.logits(probe)
            got = reduced_forward(model, module, probe)
    except Exception as exc:  # a conversion the network does not support: stay in fp32
        return None, f"bf16 copy fails ({first_line(exc, 120)}); searching in fp32"
    diff = float((got - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    if not diff <= _precision.AGREEMENT_TOL * scale:  # also catches NaN
        return None, f"bf16 copy differs from fp32 by {diff:.3g}; searching in fp32"
    return module, ""


def reduced_forward(model: Model, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s logits of ``x`` computed by the bf16 copy ``module`` (as float32)."""
    xm = model.to_model_input(x).to(torch.bfloat16)
    if xm.dim() == 4:
        xm = xm.contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = module(xm)
    return model._as_logits(flat_outputs(out, x.shape[0]).float())


def exact_where_moved(
    out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, exact: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``out`` with the rows predicted other than ``y`` replaced by ``exact`` of their inputs.

    Values are exact (``out - out`` is 0 exactly); the gradient is ``out``'s on every row."""
    moved = out.detach().argmax(dim=1) != y
    if not bool(moved.any()):
        return out
    with torch.no_grad():
        values = out.detach().clone()
        values[moved] = exact(x.detach()[moved])
    return out - out.detach() + values
