"""The small API behind ``advaudit harden``: train a :class:`~advaudit.models.Model`, evaluate, export."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import torch

from ..errors import DataError, ModelError, UsageError
from ..models import Model
from .train import METHODS, EpochStats, HardenResult, Progress, adversarial_train


def model_forward(model: Model) -> Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]:
    """``forward(module, x)``: natural NCHW inputs -> logits through ``model``'s preprocessing.

    Mirrors :meth:`Model.logits` for a module other than the model's own (the trained copy): the
    model's normalisation and layout, the first output, and log-probabilities for probability outputs.
    """
    probs = model.output_kind == "probabilities"

    def forward(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # onnx2torch warns on every call of some converted ops
            warnings.simplefilter("ignore", UserWarning)
            out = module(model.to_model_input(x))
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out.reshape(x.shape[0], -1).float()
        return torch.log(out.clamp_min(1e-12)) if probs else out

    return forward


def check_inputs(model: Model, y: np.ndarray, eps: float, method: str) -> None:
    """The bad-input checks of the issue: gradients, labels vs classes, eps range, method."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}", f"choose one of {', '.join(METHODS)}")
    if model.torch_module() is None:
        raise ModelError(
            f"cannot harden {model.path.name}: it has no differentiable twin ({model.gradients.note})",
            "adversarial training needs gradients; give a TorchScript model or an ONNX graph onnx2torch converts",
        )
    if model.torch_batch is not None:
        raise ModelError(f"cannot harden {model.path.name}: its graph has a fixed batch size {model.torch_batch}",
                         "export the model with a dynamic batch dimension")
    lo, hi = model.bounds
    if not np.isfinite(eps) or eps <= 0 or eps > (hi - lo):
        raise UsageError(f"eps {eps:g} is out of range for inputs in [{lo:g}, {hi:g}]",
                         f"give 0 < --eps <= {hi - lo:g} (L-inf, in the model's input units)")
    k = model.num_classes or 0
    if len(y) == 0:
        raise DataError("the training data is empty")
    if y.min() < 0 or y.max() >= k:
        raise DataError(f"the labels run from {int(y.min())} to {int(y.max())} but the model has {k} classes",
                        "give data labelled 0..K-1 in the model's class order")


def harden(
    model: Model,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    method: str = "pgd",
    *,
    progress: Progress | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    module: torch.nn.Module | None = None,
    **kw: Any,
) -> HardenResult:
    """Adversarially fine-tune ``model``'s differentiable module on ``(x, y)``; the model is untouched.

    ``module`` trains a given module (for example a :func:`~advaudit.harden.train.trainable_copy` of
    ``model.torch_module()`` to export checkpoints from ``on_epoch``) instead of a fresh copy.
    """
    check_inputs(model, np.asarray(y), eps, method)
    if module is None:
        module = model.torch_module()
    assert module is not None
    return adversarial_train(module, x, y, eps, method, bounds=model.bounds, forward=model_forward(model),
                             progress=progress, on_epoch=on_epoch, **kw)
