"""Model loading: one :class:`Model` interface over ONNX and TorchScript files."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import GradientInfo, LoadOptions, Model, Prediction, sha256_file

TORCHSCRIPT_SUFFIXES = {".pt", ".pth", ".ts", ".torchscript", ".jit", ".zip"}

__all__ = ["GradientInfo", "LoadOptions", "Model", "Prediction", "load_model", "sha256_file"]


def load_model(
    path: str | Path,
    *,
    spec: dict[str, Any] | None = None,
    spec_file: str | None = None,
    device: str = "cpu",
    max_size_mb: float = 2048.0,
    check_gradients: bool = True,
) -> Model:
    """Load an ONNX or TorchScript classifier.

    ``spec`` holds input-spec overrides (``range``, ``mean``, ``std``, ``layout``, ``class_names``,
    ``input_shape``) with the highest priority; ``spec_file`` names a YAML spec.  See
    :mod:`advaudit.spec` for the order of the sources.
    """
    p = Path(path)
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
    opts = LoadOptions(
        spec_flags={k: v for k, v in (spec or {}).items() if v is not None},
        spec_file=spec_file,
        device=device,
        max_size_mb=max_size_mb,
        check_gradients=check_gradients,
    )
    if p.suffix.lower() in TORCHSCRIPT_SUFFIXES or (p.suffix.lower() != ".onnx" and zipfile.is_zipfile(p)):
        from .torchscript_model import TorchScriptModel

        return TorchScriptModel(p, opts)
    from .onnx_model import OnnxModel

    return OnnxModel(p, opts)
