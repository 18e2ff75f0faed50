"""The one gate model (:mod:`advaudit.gates`): both syntaxes, string thresholds, the ratchet, and the
two legacy views (``report.gates`` for ``--fail-under``, ``audit.gates`` for audits) built on it."""

from __future__ import annotations

import math

import pytest

from advaudit import gates
from advaudit.audit import gates as audit_gates
from advaudit.audit.config import HEADLINE
from advaudit.errors import UsageError
from advaudit.gates import GateResult, GateSpec, evaluate_gates, fail_on_backdoor, fail_under, parse_gate
from advaudit.report import gates as report_gates

STEPS = [
    {"name": "attack", "kind": "attack", "eps": [0.1, 0.3]},
    {"name": "backdoor", "kind": "scan-backdoor"},
    {"name": "detect", "kind": "detect"},
]


def _audit(text: str) -> GateSpec:
    return parse_gate(text, STEPS, HEADLINE)


# --- parsing ------------------------------------------------------------------------------------------


def test_fail_under_means_at_least():
    assert fail_under("robust_accuracy=0.5") == GateSpec(
        metric="robust_accuracy", op=">=", threshold=0.5, text="robust_accuracy >= 0.5")
    assert fail_under(" robust_accuracy@0.10 = 0.25") == GateSpec(
        metric="robust_accuracy@0.10", op=">=", threshold=0.25, text="robust_accuracy@0.10 >= 0.25")
    assert fail_under("clean_accuracy=1").threshold == 1.0


@pytest.mark.parametrize("text, message", [
    ("robust=0.5", "bad gate 'robust=0.5'"),
    ("robust_accuracy", "bad gate 'robust_accuracy'"),
    ("robust_accuracy=abc", "'abc' is not a number"),
    ("clean_accuracy@0.1=0.5", "only robust_accuracy takes @EPS"),
    ("robust_accuracy@x=0.5", "'x' is not a number"),
    ("robust_accuracy=5", "thresholds are fractions between 0 and 1"),
])
def test_fail_under_refuses(text, message):
    with pytest.raises(UsageError) as exc:
        fail_under(text)
    assert message in exc.value.message


def test_audit_syntax_resolves_the_step():
    assert _audit("robust_accuracy@0.10 >= 0.6") == GateSpec(
        metric="attack.robust_accuracy@0.1", op=">=", threshold=0.6, text="robust_accuracy@0.10 >= 0.6")
    assert _audit("backdoor == clean") == GateSpec(
        metric="backdoor.verdict", op="==", threshold="clean", text="backdoor == clean")
    assert _audit("detect.sprt_false_positive_rate <= 0.2").metric == "detect.sprt_false_positive_rate"
    assert _audit("backdoor.suspected_targets != '3,7'").threshold == "3,7"


@pytest.mark.parametrize("text, message", [
    ("auroc > high", "which is not a number"),
    ("auroc >= nan", "is not a finite number"),
    ("robust_accuracy@0.2 >= 0.5", "does not attack at eps 0.2"),
    ("clean_accuracy@0.1 >= 0.5", "takes no '@'"),
    ("unknown >= 1", "no step measures 'unknown'"),
    ("backdoor.auroc >= 1", "does not measure 'auroc'"),
    ("detect.auroc == high", "auroc is a number"),
    ("clean_accuracy", "is not a gate"),
])
def test_audit_syntax_refuses(text, message):
    with pytest.raises(UsageError) as exc:
        _audit(text)
    assert message in exc.value.message


# --- evaluation ---------------------------------------------------------------------------------------


def test_both_syntaxes_decide_alike():
    flag, written = fail_under("robust_accuracy@0.1=0.6"), _audit("attack.robust_accuracy@0.1 >= 0.6")
    for value, passed in ((0.5, False), (0.6, True), (0.5999999, True), (0.7, True)):
        a = evaluate_gates([flag], {"robust_accuracy@0.1": value})[0]
        b = evaluate_gates([written], {"attack.robust_accuracy@0.1": value})[0]
        assert a.passed is b.passed is passed
        assert a.reason == b.reason


def test_string_thresholds_and_fail_on_backdoor():
    gate = fail_on_backdoor()
    clean = evaluate_gates([gate], {"verdict": "clean"})[0]
    dirty = evaluate_gates([gate], {"verdict": "backdoored"})[0]
    assert clean.passed and not dirty.passed
    assert dirty.to_dict() == {
        "gate": "backdoor == clean", "metric": "verdict", "op": "==", "threshold": "clean", "value": "backdoored",
        "passed": False, "baseline": None, "regressed": None, "reason": "backdoored is not == clean",
    }
    other = _audit("backdoor.suspected_targets != '3,7'")
    assert not evaluate_gates([other], {"backdoor.suspected_targets": "3,7"})[0].passed
    assert evaluate_gates([other], {"backdoor.suspected_targets": "7"})[0].passed


def test_missing_non_numeric_and_nan_values_fail():
    gate = _audit("detect.auroc >= 0.5")
    missing, text, nan = (evaluate_gates([gate], m)[0] for m in (
        {}, {"detect.auroc": "high"}, {"detect.auroc": math.nan}))
    assert not missing.passed and missing.reason == "detect.auroc was not measured"
    assert not text.passed and not nan.passed
    assert not evaluate_gates([gate], {"detect.auroc": True})[0].passed  # a flag is not a number


def test_ratchet():
    up, down = _audit("robust_accuracy@0.1 >= 0.5"), _audit("detect.sprt_false_positive_rate <= 0.2")
    base = {"attack.robust_accuracy@0.1": 0.70, "detect.sprt_false_positive_rate": 0.05}

    def one(gate: GateSpec, value: float) -> GateResult:
        metric = gate.metric
        return evaluate_gates([gate], {metric: value}, base, 0.01)[0]

    assert one(up, 0.695).passed and one(up, 0.695).regressed is False and one(up, 0.695).baseline == 0.70
    worse = one(up, 0.65)
    assert not worse.passed and worse.regressed is True
    assert worse.reason == "regressed from 0.7000 to 0.6500 (tolerance 0.01)"
    assert one(up, 0.80).regressed is False
    assert not one(down, 0.15).passed and one(down, 0.055).passed  # lower is better: regresses upwards
    eq = _audit("backdoor == clean")
    r = evaluate_gates([eq], {"backdoor.verdict": "clean"}, {"backdoor.verdict": "backdoored"})[0]
    assert r.passed and r.regressed is None and r.baseline == "backdoored"
    no_base = evaluate_gates([up], {"attack.robust_accuracy@0.1": 0.6}, {}, 0.01)[0]
    assert no_base.passed and no_base.regressed is None


# --- the legacy views -----------------------------------------------------------------------------------


def test_audit_view_records_to_dict():
    specs = [_audit("robust_accuracy@0.1 >= 0.6"), _audit("backdoor == clean")]
    metrics = {"attack.robust_accuracy@0.1": 0.4, "backdoor.verdict": "clean"}
    assert audit_gates.evaluate_gates(specs, metrics) == [r.to_dict() for r in evaluate_gates(specs, metrics)]
    assert audit_gates.parse_gate is gates.parse_gate and audit_gates.GateSpec is GateSpec


def test_fail_under_view_keeps_the_attack_report_shape():
    specs = [report_gates.parse_gate("robust_accuracy=0.5"), report_gates.parse_gate("robust_accuracy@0.10=0.8")]
    assert report_gates.evaluate_gates(specs, 0.95, {0.1: 0.85, 0.3: 0.4}) == [
        {"metric": "robust_accuracy", "threshold": 0.5, "value": 0.4, "passed": False},
        {"metric": "robust_accuracy@0.10", "threshold": 0.8, "value": 0.85, "passed": True},
    ]
    with pytest.raises(UsageError, match="names an eps that was not attacked"):
        report_gates.evaluate_gates([report_gates.parse_gate("robust_accuracy@0.2=0.1")], 0.9, {0.1: 0.5})
