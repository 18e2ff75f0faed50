"""``--fail-under METRIC=VALUE`` gates: parsing and the pure pass/fail decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import UsageError

METRICS = ("robust_accuracy", "clean_accuracy")


@dataclass(frozen=True)
class Gate:
    """``metric >= threshold`` must hold; ``metric`` may be ``robust_accuracy@EPS``."""

    metric: str
    threshold: float


def parse_gate(text: str) -> Gate:
    metric, sep, value = text.partition("=")
    metric = metric.strip()
    base, _, at = metric.partition("@")
    if not sep or base not in METRICS:
        raise UsageError(
            f"bad gate {text!r}", "write METRIC=VALUE with METRIC robust_accuracy, clean_accuracy or robust_accuracy@EPS"
        )
    if at:
        if base != "robust_accuracy":
            raise UsageError(f"bad gate {text!r}: only robust_accuracy takes @EPS")
        try:
            float(at)
        except ValueError:
            raise UsageError(f"bad gate {text!r}: {at!r} is not a number") from None
    try:
        threshold = float(value)
    except ValueError:
        raise UsageError(f"bad gate {text!r}: {value!r} is not a number") from None
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"bad gate {text!r}: thresholds are fractions between 0 and 1")
    return Gate(metric, threshold)


def metric_value(metric: str, clean_accuracy: float, robust_by_eps: Mapping[float, float]) -> float:
    """Look a gate's metric up in the measured figures."""
    if metric == "clean_accuracy":
        return clean_accuracy
    if metric == "robust_accuracy":
        return robust_by_eps[max(robust_by_eps)]
    eps = float(metric.partition("@")[2])
    for e, v in robust_by_eps.items():
        if abs(e - eps) <= 1e-9 * max(1.0, abs(eps)):
            return v
    raise UsageError(f"gate {metric} names an eps that was not attacked", f"attacked: {', '.join(f'{e:g}' for e in robust_by_eps)}")


def should_fail(value: float, threshold: float, precision: int = 6) -> bool:
    """True when ``value`` is below ``threshold`` (compared after rounding to ``precision`` digits)."""
    return round(value, precision) < round(threshold, precision)


def evaluate_gates(gates: list[Gate], clean_accuracy: float, robust_by_eps: Mapping[float, float]) -> list[dict[str, Any]]:
    """Report entries ``{metric, threshold, value, passed}`` for each gate."""
    out = []
    for g in gates:
        value = metric_value(g.metric, clean_accuracy, robust_by_eps)
        out.append({"metric": g.metric, "threshold": g.threshold, "value": value, "passed": not should_fail(value, g.threshold)})
    return out
