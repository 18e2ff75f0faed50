"""``--fail-under METRIC=VALUE`` gates of attack and defence runs: the attack report's view of
:mod:`advaudit.gates` (``METRIC >= VALUE``, decided by :func:`advaudit.gates.evaluate_gates`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .. import gates as _gates
from ..errors import UsageError
from ..gates import FAIL_UNDER_METRICS as METRICS
from ..gates import GateSpec as Gate

parse_gate = _gates.fail_under


def metric_value(metric: str, clean_accuracy: float, robust_by_eps: Mapping[float, float]) -> float:
    """Look a gate's metric up in the measured figures (an eps that was not attacked is a usage error)."""
    if metric == "clean_accuracy":
        return clean_accuracy
    if metric == "robust_accuracy":
        return robust_by_eps[max(robust_by_eps)]
    eps = float(metric.partition("@")[2])
    for e, v in robust_by_eps.items():
        if abs(e - eps) <= 1e-9 * max(1.0, abs(eps)):
            return v
    attacked = ", ".join(f"{e:g}" for e in robust_by_eps)
    raise UsageError(f"gate {metric} names an eps that was not attacked", f"attacked: {attacked}")


def should_fail(value: float, threshold: float, precision: int = _gates.PRECISION) -> bool:
    """True when ``value`` is below ``threshold`` (compared after rounding to ``precision`` digits)."""
    return round(value, precision) < round(threshold, precision)


def evaluate_gates(
    gates: Sequence[Gate], clean_accuracy: float, robust_by_eps: Mapping[float, float]
) -> list[dict[str, Any]]:
    """Report entries ``{metric, threshold, value, passed}`` for each gate (the attack report's shape)."""
    out = []
    for g in gates:
        value = metric_value(g.metric, clean_accuracy, robust_by_eps)
        result = _gates.evaluate_gate(g, {g.metric: value})
        out.append({"metric": g.metric, "threshold": g.threshold, "value": value, "passed": result.passed})
    return out


__all__ = ["METRICS", "Gate", "evaluate_gates", "metric_value", "parse_gate", "should_fail"]
