"""Checks of a differentiable twin against the deployment runtime.

A model's gradient path (the torch twin of an ONNX graph, a TorchScript module, an exported program)
is only used when it computes what the runtime computes: :func:`compare_twin` decides that from the
outputs of both on the same probe batch, for every model format alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GradientInfo", "compare_twin", "surrogate_error"]


@dataclass
class GradientInfo:
    """Whether :meth:`Model.logits` is available, how, and if not why."""

    available: bool
    source: str
    note: str = ""
    max_abs_diff: float | None = None


def compare_twin(got: np.ndarray, ref: np.ndarray, tol: float = 1e-3, surrogate: bool = False) -> GradientInfo:
    """Whether the twin's outputs ``got`` match the runtime's ``ref`` on the probe batch.

    An exact twin must agree within ``tol`` of the largest logit.  A ``surrogate`` (a quantised
    graph's straight-through twin, whose values the runtime replaces during the search) must
    only track the runtime: its relative error (:func:`surrogate_error`) at most ``tol``.
    """
    if got.shape != ref.shape:
        return GradientInfo(False, "none", f"differentiable twin returns shape {got.shape}, runtime {ref.shape}")
    diff = float(np.max(np.abs(got - ref)))
    if surrogate:
        error = surrogate_error(got, ref)
        if not error <= tol:  # also catches NaN
            return GradientInfo(
                False,
                "none",
                f"straight-through twin does not track the runtime (relative error {error:.3g} > {tol})",
                diff,
            )
        return GradientInfo(True, "", f"surrogate relative error {error:.3g} on the probe batch", diff)
    scale = max(1.0, float(np.max(np.abs(ref))))
    if not np.isfinite(diff) or diff > tol * scale:
        return GradientInfo(
            False, "none", f"differentiable twin disagrees with the runtime (max abs diff {diff:.3g})", diff
        )
    return GradientInfo(True, "", "", diff)


def surrogate_error(got: np.ndarray, ref: np.ndarray) -> float:
    """||got - ref|| / ||ref - its per-row mean||: 0 for an exact twin, about 1.4 for an unrelated one.

    Logits are defined up to a per-row constant only through softmax, and quantised graphs round at
    every layer, so a twin whose values are a few quanta off still points its gradient the right way;
    this measures how far off it is relative to the spread of the runtime's logits."""
    spread = float(np.linalg.norm(ref - ref.mean(axis=1, keepdims=True)))
    return float(np.linalg.norm(got - ref)) / max(spread, 1e-12)
