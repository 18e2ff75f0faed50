"""One gate model for every command and the audit: a gate is ``METRIC OP THRESHOLD`` over a flat
metrics dict (a job result's ``metrics()``, or an audit's ``<step>.<name>`` metrics).

Three ways to write one, one way to decide it (:func:`evaluate_gates`):

* ``--fail-under METRIC=VALUE`` (:func:`fail_under`) means ``METRIC >= VALUE``;
* ``--fail-on-backdoor`` (:func:`fail_on_backdoor`) means ``verdict == clean`` (written ``backdoor == clean``,
  as in an audit);
* an audit gate ``METRIC OP VALUE`` (:func:`parse_gate`), whose metric is resolved against the
  configured steps: ``<step>.<name>``, a step name alone (its headline metric) or a bare name (the
  first step that measures it).  ``robust_accuracy@0.10`` and ``robust_accuracy@0.1`` are the same.

Torch-free: ``advaudit report`` and the audit's config validation use it without loading a model.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .errors import UsageError

MetricValue = float | int | str | None

KIND_METRICS: dict[str, tuple[str, ...]] = {
    "attack": ("clean_accuracy", "robust_accuracy", "success_rate"),
    "defense": ("clean_accuracy", "robust_accuracy", "clean_accuracy_undefended"),
    "scan-backdoor": ("verdict", "suspected_targets", "anomaly_index", "p_value", "nc_p_value", "mmbd_p_value"),
    "detect": ("auroc", "auroc_mean", "sprt_precision", "sprt_recall", "sprt_false_positive_rate", "ms_per_input"),
    "harden": ("clean_accuracy", "robust_accuracy", "clean_accuracy_before", "robust_accuracy_before"),
    "repair": ("clean_accuracy_before", "asr_before", "clean_accuracy_after", "asr_after"),
}
"""What each audit step kind measures (names before any ``@``)."""
AT_METRICS = {"robust_accuracy": ("attack", "defense"), "auroc": ("detect",)}
"""Metrics that take an ``@ARG`` (eps, adversarial group) and the step kinds that measure them."""
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
HIGHER_IS_BETTER = {">=", ">"}
LOWER_IS_BETTER = {"<=", "<"}
FAIL_UNDER_METRICS = ("robust_accuracy", "clean_accuracy")
"""What ``--fail-under`` gates (attack and defence runs)."""
PRECISION = 6
"""Values and thresholds are compared after rounding to this many digits (0.5999999 clears 0.6)."""

_GATE = re.compile(r"^\s*(?P<metric>[A-Za-z][A-Za-z0-9_.@:+\-]*)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>\S.*?)\s*$")
_FAIL_UNDER_HINT = "write METRIC=VALUE with METRIC robust_accuracy, clean_accuracy or robust_accuracy@EPS"


@dataclass(frozen=True)
class GateSpec:
    """``metric op threshold`` must hold; ``text`` is the gate as the user wrote it (or as a flag means it)."""

    metric: str
    op: str
    threshold: float | str
    text: str


@dataclass(frozen=True)
class GateResult:
    """One gate decided: the measured ``value``, and with a baseline its value there and whether the
    metric regressed beyond the tolerance (None: no numeric baseline to compare with)."""

    spec: GateSpec
    value: MetricValue
    passed: bool
    baseline: MetricValue
    regressed: bool | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The report entry: ``{gate, metric, op, threshold, value, passed, baseline, regressed, reason}``."""
        g = self.spec
        return {
            "gate": g.text, "metric": g.metric, "op": g.op, "threshold": g.threshold, "value": self.value,
            "passed": bool(self.passed), "baseline": self.baseline, "regressed": self.regressed, "reason": self.reason,
        }


def fail_under(text: str) -> GateSpec:
    """``--fail-under METRIC=VALUE``: ``METRIC >= VALUE`` with METRIC ``robust_accuracy``,
    ``clean_accuracy`` or ``robust_accuracy@EPS`` and VALUE a fraction in [0, 1].  The metric is kept
    as written (the attack report records it so)."""
    metric, sep, value = text.partition("=")
    metric = metric.strip()
    base, _, at = metric.partition("@")
    if not sep or base not in FAIL_UNDER_METRICS:
        raise UsageError(f"bad gate {text!r}", _FAIL_UNDER_HINT)
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
    return GateSpec(metric=metric, op=">=", threshold=threshold, text=f"{metric} >= {threshold:g}")


def fail_on_backdoor() -> GateSpec:
    """``--fail-on-backdoor``: the scan's combined verdict must be ``clean`` (it is clean or backdoored)."""
    return GateSpec(metric="verdict", op="==", threshold="clean", text="backdoor == clean")


def canonical(name: str) -> str:
    """``robust_accuracy@0.10`` -> ``robust_accuracy@0.1`` (names without a numeric ``@`` unchanged)."""
    base, sep, arg = name.partition("@")
    if not sep:
        return name
    try:
        return f"{base}@{float(arg):g}"
    except ValueError:
        return name


def _eps_list(step: Mapping[str, Any]) -> list[float] | None:
    """The eps a configured attack/defence step attacks at (None: the default ones, unknown here)."""
    eps = step.get("eps")
    if eps is None:
        return None
    return [float(e) for e in (eps if isinstance(eps, list) else [eps])]


def _threshold(text: str, op: str, value_text: str) -> float | str:
    """The threshold as a finite number, or as a string for ``==`` / ``!=``."""
    try:
        threshold = float(value_text)
    except ValueError:
        if op not in ("==", "!="):
            raise UsageError(
                f"gate {text!r} compares with {op} against {value_text!r}, which is not a number") from None
        return value_text
    if not math.isfinite(threshold):
        raise UsageError(f"gate {text!r}: the threshold {value_text!r} is not a finite number")
    return threshold


def _resolve(text: str, token: str, steps: Sequence[Mapping[str, Any]],
             headline: Mapping[str, str]) -> tuple[Mapping[str, Any], str]:
    """The step a gate's metric token belongs to and the metric's name in that step."""
    by_name = {s["name"]: s for s in steps}
    prefix, dot, rest = token.partition(".")
    if token in by_name:
        return by_name[token], headline[by_name[token]["kind"]]
    if dot and prefix in by_name:
        return by_name[prefix], canonical(rest)
    name = canonical(token)
    base = name.partition("@")[0]
    step = next((s for s in steps if base in KIND_METRICS[s["kind"]]), None)
    if step is None:
        known = sorted({m for s in steps for m in KIND_METRICS[s["kind"]]} | set(by_name))
        raise UsageError(f"gate {text!r}: no step measures {token!r}", f"known here: {', '.join(known)}")
    return step, name


def _check_at(text: str, step: Mapping[str, Any], base: str, arg: str) -> None:
    """An ``@ARG`` must belong to a metric that takes one, be a number and (for an eps) be attacked."""
    if step["kind"] not in AT_METRICS.get(base, ()):
        raise UsageError(f"gate {text!r}: {base} takes no '@'")
    eps = _eps_list(step) if base == "robust_accuracy" else None
    try:
        at_eps = float(arg)
    except ValueError:
        raise UsageError(f"gate {text!r}: {arg!r} after '@' is not a number", "e.g. robust_accuracy@0.1") from None
    if eps is not None and not any(abs(e - at_eps) <= 1e-9 * max(1.0, abs(e)) for e in eps):
        raise UsageError(f"gate {text!r}: step {step['name']!r} does not attack at eps {arg}",
                         f"its eps: {', '.join(f'{e:g}' for e in eps)}")


def parse_gate(text: str, steps: Sequence[Mapping[str, Any]], headline: Mapping[str, str]) -> GateSpec:
    """Parse an audit gate ``METRIC OP VALUE`` and resolve its metric against the configured
    ``steps`` (dicts with ``name`` and ``kind``); ``headline`` names each kind's headline metric."""
    m = _GATE.match(text)
    if not m:
        raise UsageError(f"{text!r} is not a gate", "write METRIC OP VALUE, e.g. 'robust_accuracy@0.1 >= 0.6'")
    token, op = m["metric"], m["op"]
    threshold = _threshold(text, op, m["value"].strip("'\""))
    step, name = _resolve(text, token, steps, headline)
    base, at, arg = name.partition("@")
    if base not in KIND_METRICS[step["kind"]]:
        raise UsageError(
            f"gate {text!r}: a {step['kind']} step does not measure {base!r}",
            f"it measures {', '.join(KIND_METRICS[step['kind']])}",
        )
    if at:
        _check_at(text, step, base, arg)
    if isinstance(threshold, str) and base not in ("verdict", "suspected_targets"):
        raise UsageError(f"gate {text!r}: {base} is a number, not {threshold!r}")
    return GateSpec(metric=f"{step['name']}.{name}", op=op, threshold=threshold, text=text.strip())


def passes(value: Any, op: str, threshold: float | str) -> bool:
    """``value op threshold``: numbers after rounding to :data:`PRECISION` digits (a non-number or
    NaN fails a numeric threshold), strings as written."""
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:  # NaN fails
            return False
        return OPS[op](round(float(value), PRECISION), round(float(threshold), PRECISION))
    return OPS[op](str(value), threshold)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _regressed(spec: GateSpec, value: MetricValue, base: MetricValue, tolerance: float) -> bool | None:
    """True when ``value`` is worse than the baseline's by more than ``tolerance`` in the gate's
    direction; None when there is nothing numeric to compare (or the gate has no direction)."""
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)) or isinstance(base, bool):
        return None
    if spec.op not in HIGHER_IS_BETTER | LOWER_IS_BETTER:
        return None
    delta = float(value) - float(base)
    worse = -delta if spec.op in HIGHER_IS_BETTER else delta
    return round(worse, PRECISION) > round(tolerance, PRECISION)


def evaluate_gate(spec: GateSpec, metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None = None,
                  tolerance: float = 0.01) -> GateResult:
    """Decide one gate over ``metrics`` (see :func:`evaluate_gates`)."""
    value = metrics.get(spec.metric)
    base = None if baseline is None else baseline.get(spec.metric)
    if value is None:
        passed, reason = False, f"{spec.metric} was not measured"
    else:
        passed = passes(value, spec.op, spec.threshold)
        shown = f"{_fmt(value)} {spec.op} {_fmt(spec.threshold)}"
        reason = shown if passed else f"{_fmt(value)} is not {spec.op} {_fmt(spec.threshold)}"
    regressed = _regressed(spec, value, base, tolerance)
    if regressed:
        passed = False
        assert isinstance(base, (int, float)) and isinstance(value, (int, float))  # regressed is None otherwise
        reason = f"regressed from {_fmt(float(base))} to {_fmt(float(value))} (tolerance {tolerance:g})"
    return GateResult(spec=spec, value=value, passed=bool(passed), baseline=base, regressed=regressed, reason=reason)


def evaluate_gates(gates: Sequence[GateSpec], metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None = None,
                   tolerance: float = 0.01) -> list[GateResult]:
    """Decide every gate over the flat ``metrics``.  A metric that was not measured fails its gate.
    With ``baseline`` (the metrics of an earlier run), a numeric gate also fails when its metric is
    worse than the baseline's by more than ``tolerance`` in the gate's direction (the ratchet), even
    when it clears the threshold."""
    return [evaluate_gate(g, metrics, baseline, tolerance) for g in gates]
