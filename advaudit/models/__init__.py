"""Model loading: one :class:`Model` interface over ONNX, TorchScript and torch.export (``.pt2``) files."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Sequence

from ..errors import ModelError
from .base import GradientInfo, LoadOptions, Model, Prediction, sha256_file

TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript", ".jit", ".zip"}
EXPORT_SUFFIXES = {".pt2"}  # torch.export.save archives (also zips: checked before TorchScript)

__all__ = [
    "GradientInfo", "LoadOptions", "Model", "Prediction", "complete_input_shape", "load_model", "sha256_file",
]


def load_model(
    path: str | Path,
    *,
    spec: dict[str, Any] | None = None,
    spec_file: str | None = None,
    device: str = "cpu",
    max_size_mb: float = 2048.0,
    check_gradients: bool = True,
    input_shape: Sequence[int] | None = None,
) -> Model:
    """Load an ONNX, TorchScript or torch.export (``.pt2``) classifier.

    The format follows the suffix (``.onnx``, ``.pt2``, ``.pt``/``.pth``/...), except that any other zip
    archive with the ``archive_format`` member ``torch.export.save`` writes is a torch.export program too
    (a ``.pt2`` is a zip: it never reaches the TorchScript loader).

    ``spec`` holds input-spec overrides (``range``, ``mean``, ``std``, ``layout``, ``class_names``,
    ``input_shape``) with the highest priority; ``spec_file`` names a YAML spec.  See
    :mod:`advaudit.spec` for the order of the sources.

    ``input_shape`` (C, H, W) completes a model whose graph leaves the input shape open (a dynamic
    spatial size, a TorchScript module): callers that only learn it from the data pass it here, and the
    model is returned probed and with its differentiable twin checked (:func:`complete_input_shape`).
    A model that declares its shape keeps it (the data are then fitted to it by ``prepare``).
    """
    p = Path(path)
    if not max_size_mb > 0:  # NaN too
        raise ModelError(f"--max-model-size must be a positive number of MB, got {max_size_mb:g}")
    if not p.exists():
        raise ModelError(f"model file not found: {p}")
    if not p.is_file():
        raise ModelError(f"model path is not a file: {p}")
    size_mb = p.stat().st_size / 2**20
    if size_mb > max_size_mb:
        raise ModelError(
            f"{p.name} is {size_mb:.3g} MB, over the {max_size_mb:.3g} MB limit", "raise it with --max-model-size"
        )
    if p.stat().st_size == 0:
        raise ModelError(f"{p.name} is empty")
    _check_device(device)
    opts = LoadOptions(
        spec_flags={k: v for k, v in (spec or {}).items() if v is not None},
        spec_file=spec_file,
        device=device,
        max_size_mb=max_size_mb,
        check_gradients=check_gradients,
    )
    suffix = p.suffix.lower()
    if suffix in EXPORT_SUFFIXES or (suffix != ".onnx" and _is_pt2(p)):
        from .export_model import ExportedProgramModel

        return complete_input_shape(ExportedProgramModel(p, opts), input_shape)
    if suffix in TORCHSCRIPT_SUFFIXES or (suffix != ".onnx" and zipfile.is_zipfile(p)):
        from .torchscript_model import TorchScriptModel

        return complete_input_shape(TorchScriptModel(p, opts), input_shape)
    from .onnx_model import OnnxModel

    return complete_input_shape(OnnxModel(p, opts), input_shape)


def complete_input_shape(model: Model, input_shape: Sequence[int] | None) -> Model:
    """``model``, with ``input_shape`` (C, H, W) declared where the model file leaves it open: the
    probe runs and the differentiable twin is checked now, so the model is complete before any data
    are prepared for it.  A model that already knows its shape (or ``input_shape=None``) is unchanged."""
    if input_shape is not None and model.input_shape is None:
        model.set_input_shape(tuple(int(s) for s in input_shape))
    return model


def _check_device(device: str) -> None:
    """``cpu``, or ``cuda`` / ``cuda:N`` on a machine that has that GPU; a one-line ModelError otherwise."""
    import torch

    hint = "use --device cpu, or cuda (cuda:N for one GPU)"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ModelError(f"unknown --device {device!r}", hint) from None
    if dev.type not in ("cpu", "cuda"):
        raise ModelError(f"--device {device} is not supported", hint)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelError(f"--device {device} was asked for but no CUDA device is available", "use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise ModelError(f"--device {device}: this machine has {count} CUDA device(s)",
                             f"use cuda:0..cuda:{count - 1}")


def _is_pt2(path: Path) -> bool:
    from .export_model import is_pt2_archive

    return is_pt2_archive(path)
