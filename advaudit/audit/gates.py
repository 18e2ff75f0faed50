"""Audit gates (``METRIC OP VALUE``) and the baseline ratchet: pure parsing and decisions.

A metric is ``<step>.<name>`` (``detect.auroc``), a step name alone (its headline metric:
``backdoor == clean``), or a bare name (``clean_accuracy``), which means the first step in the
configuration that measures it.  ``robust_accuracy@0.10`` and ``robust_accuracy@0.1`` are the same.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import UsageError

# What each step kind measures (names before any '@').
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "attack": ("clean_accuracy", "robust_accuracy", "success_rate"),
    "defense": ("clean_accuracy", "robust_accuracy", "clean_accuracy_undefended"),
    "scan-backdoor": ("verdict", "suspected_targets", "anomaly_index", "mmbd_p_value"),
    "detect": ("auroc", "auroc_mean", "sprt_precision", "sprt_recall", "sprt_false_positive_rate", "ms_per_input"),
}
AT_METRICS = {"robust_accuracy": ("attack", "defense"), "auroc": ("detect",)}
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
HIGHER_IS_BETTER = {">=", ">"}
LOWER_IS_BETTER = {"<=", "<"}
_GATE = re.compile(r"^\s*(?P<metric>[A-Za-z][A-Za-z0-9_.@:+\-]*)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>\S.*?)\s*$")


@dataclass(frozen=True)
class GateSpec:
    text: str  # as written
    metric: str  # resolved: "<step>.<name>[@arg]"
    op: str
    threshold: float | str


def _canonical(name: str) -> str:
    """``robust_accuracy@0.10`` -> ``robust_accuracy@0.1``."""
    base, sep, arg = name.partition("@")
    if not sep:
        return name
    try:
        return f"{base}@{float(arg):g}"
    except ValueError:
        return name


def _eps_list(step: Mapping[str, Any]) -> list[float] | None:
    eps = step.get("eps")
    if eps is None:
        return None
    return [float(e) for e in (eps if isinstance(eps, list) else [eps])]


def parse_gate(text: str, steps: list[Mapping[str, Any]], headline: Mapping[str, str]) -> GateSpec:
    """Parse ``text`` and resolve its metric against the configured ``steps`` (name, kind, ...)."""
    m = _GATE.match(text)
    if not m:
        raise UsageError(f"{text!r} is not a gate", "write METRIC OP VALUE, e.g. 'robust_accuracy@0.1 >= 0.6'")
    token, op, value_text = m["metric"], m["op"], m["value"].strip("'\"")
    threshold: float | str
    try:
        threshold = float(value_text)
    except ValueError:
        threshold = value_text
        if op not in ("==", "!="):
            raise UsageError(f"gate {text!r} compares with {op} against {value_text!r}, which is not a number") from None
    if isinstance(threshold, float) and not math.isfinite(threshold):
        raise UsageError(f"gate {text!r}: the threshold {value_text!r} is not a finite number")

    by_name = {s["name"]: s for s in steps}
    prefix, dot, rest = token.partition(".")
    if token in by_name:
        step, name = by_name[token], headline[by_name[token]["kind"]]
    elif dot and prefix in by_name:
        step, name = by_name[prefix], _canonical(rest)
    else:
        name = _canonical(token)
        base = name.partition("@")[0]
        step = next((s for s in steps if base in KIND_METRICS[s["kind"]]), None)  # type: ignore[assignment]
        if step is None:
            known = sorted({m for s in steps for m in KIND_METRICS[s["kind"]]} | set(by_name))
            raise UsageError(f"gate {text!r}: no step measures {token!r}", f"known here: {', '.join(known)}")
    base, at, arg = name.partition("@")
    if base not in KIND_METRICS[step["kind"]]:
        raise UsageError(
            f"gate {text!r}: a {step['kind']} step does not measure {base!r}",
            f"it measures {', '.join(KIND_METRICS[step['kind']])}",
        )
    if at:
        if step["kind"] not in AT_METRICS.get(base, ()):
            raise UsageError(f"gate {text!r}: {base} takes no '@'")
        eps = _eps_list(step) if base == "robust_accuracy" else None
        try:
            at_eps = float(arg)
        except ValueError:
            raise UsageError(f"gate {text!r}: {arg!r} after '@' is not a number", "e.g. robust_accuracy@0.1") from None
        if eps is not None and not any(abs(e - at_eps) <= 1e-9 * max(1.0, abs(e)) for e in eps):
            raise UsageError(f"gate {text!r}: step {step['name']!r} does not attack at eps {arg}", f"its eps: {', '.join(f'{e:g}' for e in eps)}")
    if isinstance(threshold, str) and base not in ("verdict", "suspected_targets"):
        raise UsageError(f"gate {text!r}: {base} is a number, not {threshold!r}")
    return GateSpec(text=text.strip(), metric=f"{step['name']}.{name}", op=op, threshold=threshold)


def _passes(value: Any, op: str, threshold: float | str) -> bool:
    if isinstance(threshold, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:  # NaN fails
            return False
        return OPS[op](round(float(value), 6), round(threshold, 6))
    return OPS[op](str(value), threshold)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def evaluate_gates(
    gates: list[GateSpec],
    metrics: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
    tolerance: float = 0.01,
) -> list[dict[str, Any]]:
    """One entry per gate: ``{gate, metric, op, threshold, value, passed, baseline, regressed, reason}``.

    A metric that was not measured fails its gate.  With ``baseline`` (the ``metrics`` of an earlier
    audit), a numeric gate also fails when its metric is worse than the baseline's by more than
    ``tolerance`` in the gate's direction (the ratchet), even when it clears the threshold."""
    out = []
    for g in gates:
        value = metrics.get(g.metric)
        base = None if baseline is None else baseline.get(g.metric)
        if value is None:
            passed, reason = False, f"{g.metric} was not measured"
        else:
            passed = _passes(value, g.op, g.threshold)
            reason = f"{_fmt(value)} {g.op} {_fmt(g.threshold)}" if passed else f"{_fmt(value)} is not {g.op} {_fmt(g.threshold)}"
        regressed = None
        numeric = isinstance(value, (int, float)) and isinstance(base, (int, float)) and not isinstance(base, bool)
        if numeric and g.op in HIGHER_IS_BETTER | LOWER_IS_BETTER:
            delta = float(value) - float(base)  # type: ignore[arg-type]
            worse = -delta if g.op in HIGHER_IS_BETTER else delta
            regressed = round(worse, 6) > round(tolerance, 6)
            if regressed:
                passed = False
                reason = f"regressed from {_fmt(float(base))} to {_fmt(float(value))} (tolerance {tolerance:g})"  # type: ignore[arg-type]
        out.append({
            "gate": g.text, "metric": g.metric, "op": g.op, "threshold": g.threshold, "value": value,
            "passed": bool(passed), "baseline": base, "regressed": regressed, "reason": reason,
        })
    return out
