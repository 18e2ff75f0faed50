"""Audit gates (``METRIC OP VALUE``) and the baseline ratchet: the audit's view of :mod:`advaudit.gates`.

A metric is ``<step>.<name>`` (``detect.auroc``), a step name alone (its headline metric:
``backdoor == clean``), or a bare name (``clean_accuracy``), which means the first step in the
configuration that measures it.  ``robust_accuracy@0.10`` and ``robust_accuracy@0.1`` are the same.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .. import gates as _gates
from ..gates import AT_METRICS, HIGHER_IS_BETTER, KIND_METRICS, LOWER_IS_BETTER, OPS, GateSpec, parse_gate


def evaluate_gates(
    gates: Sequence[GateSpec],
    metrics: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
    tolerance: float = 0.01,
) -> list[dict[str, Any]]:
    """One report entry per gate: ``{gate, metric, op, threshold, value, passed, baseline, regressed,
    reason}`` (:func:`advaudit.gates.evaluate_gates`, as the audit report records it)."""
    return [r.to_dict() for r in _gates.evaluate_gates(gates, metrics, baseline, tolerance)]


__all__ = [
    "AT_METRICS", "HIGHER_IS_BETTER", "KIND_METRICS", "LOWER_IS_BETTER", "OPS", "GateSpec", "evaluate_gates",
    "parse_gate",
]
