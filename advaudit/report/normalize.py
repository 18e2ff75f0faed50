"""Every report as an audit: one shape (kind ``audit``) for the HTML, Markdown and JUnit renderers.

A single-command report (kind ``attack``, ``scan-backdoor``, ``detect``, ``detect-evaluate``,
``harden`` or ``repair``) becomes an audit of one step whose ``report`` is the original, with the command's gates
(``--fail-under``, ``--fail-on-backdoor``, ``--fail-on-adversarial``) mapped to audit gates.  An audit
report is returned with missing optional keys filled in, so renderers can index without guards.
"""

from __future__ import annotations

import copy
from typing import Any

SINGLE_KINDS = ("attack", "scan-backdoor", "detect", "detect-evaluate", "harden", "repair")
# Default step names, as advaudit audit names its steps.
STEP_NAMES = {
    "attack": "attack", "defense": "defense", "scan-backdoor": "backdoor", "detect": "detect", "harden": "harden",
    "repair": "repair",
}


def step_kind(report: dict[str, Any]) -> str:
    """The audit step kind a command report belongs to."""
    kind = report.get("kind")
    if kind == "attack":
        return "defense" if "defense" in report else "attack"
    if kind in ("detect", "detect-evaluate"):
        return "detect"
    return str(kind)


def attack_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """``clean_accuracy``, ``robust_accuracy`` (largest eps), ``robust_accuracy@EPS``, ``success_rate``."""
    m: dict[str, Any] = {"clean_accuracy": report["clean_accuracy"], "robust_accuracy": report["robust_accuracy"]}
    for e, v in report["robust_accuracy_by_eps"].items():
        m[f"robust_accuracy@{e}"] = v
    if "defense" in report:
        m["clean_accuracy_undefended"] = report["defense"]["clean_accuracy_undefended"]
    else:
        clean = report["clean_accuracy"]
        m["success_rate"] = (clean - report["robust_accuracy"]) / clean if clean else 0.0
    return m


def scan_metrics(report: dict[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = {
        "verdict": report["verdict"], "suspected_targets": ",".join(map(str, report["suspected_targets"])),
    }
    combined = report.get("combined") or {}
    if combined.get("p_value") is not None:
        m["p_value"] = combined["p_value"]
    nc = report["evidence"].get("neural-cleanse")
    if nc is not None and nc.get("max_anomaly_index") is not None:
        m["anomaly_index"] = nc["max_anomaly_index"]
    if nc is not None and nc.get("p_value") is not None:
        m["nc_p_value"] = nc["p_value"]
    mm = report["evidence"].get("mm-bd")
    if mm is not None:
        m["mmbd_p_value"] = mm["p_value"]
    return m


def detect_evaluate_metrics(report: dict[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = {"auroc": report["auroc_all"], "auroc_mean": report["auroc_mean"]}
    m.update({f"auroc@{g}": v for g, v in report["auroc"].items()})
    if "method" in report:  # a detector other than LCR: its decisions' figures
        d = report["decisions"]
        m.update({k: d[k] for k in ("precision", "recall", "false_positive_rate", "ms_per_input")})
        return m
    s = report["sprt"]
    m.update({
        "sprt_precision": s["precision"], "sprt_recall": s["recall"],
        "sprt_false_positive_rate": s["false_positive_rate"], "ms_per_input": s["ms_per_input"],
    })
    return m


def detect_run_metrics(report: dict[str, Any]) -> dict[str, Any]:
    t = report["totals"]
    return {"adversarial": t["adversarial"], "normal": t["normal"], "undecided": t["undecided"],
            "ms_per_input": t.get("ms_per_input")}


def harden_metrics(report: dict[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = {}
    for row in report["summary"]:
        name = row["metric"] + (f"@{row['suite']}" if row.get("suite") else "")
        m[f"{name}_before"] = row["before"]
        m[f"{name}_after"] = row["after"]
    return m


def repair_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """As the repair job's ``metrics()``: clean accuracy and the largest reversed-trigger attack success,
    before and (when a model was written) after."""
    before, after = report["before"], report.get("after")
    m = {"clean_accuracy_before": before["clean_accuracy"], "asr_before": before["max_asr"]}
    if after is not None:
        m.update(clean_accuracy_after=after["clean_accuracy"], asr_after=after["max_asr"])
    return m


def step_metrics(report: dict[str, Any]) -> dict[str, Any]:
    kind = report.get("kind")
    if kind == "attack":
        return attack_metrics(report)
    if kind == "scan-backdoor":
        return scan_metrics(report)
    if kind == "detect-evaluate":
        return detect_evaluate_metrics(report)
    if kind == "detect":
        return detect_run_metrics(report)
    if kind == "harden":
        return harden_metrics(report)
    if kind == "repair":
        return repair_metrics(report)
    return {}


def _step_time(report: dict[str, Any]) -> float | None:
    kind = report.get("kind")
    if kind == "attack":
        if "defense" in report:
            return sum(float(m.get("time_s") or 0.0) for m in report["defense"]["modes"].values())
        return sum(float(r.get("time_s") or 0.0) for r in report.get("results", []))
    if kind == "scan-backdoor":
        return float(report["time_s"])
    if kind == "detect":
        return report["totals"].get("time_s")
    return None


def _command_gates(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The single command's own gates, in the audit gate shape: a scan's recorded gates are copied
    (their metric named after the step); the other forms are mapped (attack's ``--fail-under``
    entries, a scan's ``{"fail_on_backdoor": bool}`` of older reports, detect's gate inferred from
    the recorded command)."""
    kind = report.get("kind")
    gates: list[dict[str, Any]] = []
    if kind == "attack":
        for g in report.get("gates", []):
            value, threshold = g["value"], g["threshold"]
            gates.append(_gate(
                f"{g['metric']} >= {threshold:g}", f"{name}.{g['metric']}", ">=", threshold, value, g["passed"],
                f"{value:.4f} >= {threshold:g}" if g["passed"] else f"{value:.4f} < {threshold:g}",
            ))
    elif kind == "scan-backdoor" and isinstance(report.get("gates"), list):
        gates += [{**g, "metric": f"{name}.{g['metric']}"} for g in report["gates"]]
    elif kind == "scan-backdoor" and (report.get("gates") or {}).get("fail_on_backdoor"):  # before the gate model
        verdict = report["verdict"]
        ok = verdict == "clean"
        targets = ", ".join(map(str, report["suspected_targets"])) or "none"
        gates.append(_gate(f"{name} == clean", f"{name}.verdict", "==", "clean", verdict, ok,
                           "verdict clean" if ok else f"verdict backdoored (suspected target(s) {targets})"))
    elif kind == "detect" and ("--fail-on-adversarial" in str(report.get("command", "")).split()
                               or not report.get("passed", True)):
        n_adv = report["totals"]["adversarial"]
        ok = bool(report.get("passed", n_adv == 0))
        gates.append(_gate(f"{name}.adversarial == 0", f"{name}.adversarial", "==", 0, n_adv, ok,
                           "no input flagged adversarial" if ok else f"{n_adv} input(s) flagged adversarial"))
    return gates


def _gate(text: str, metric: str, op: str, threshold: Any, value: Any, passed: bool, reason: str) -> dict[str, Any]:
    return {"gate": text, "metric": metric, "op": op, "threshold": threshold, "value": value, "passed": bool(passed),
            "baseline": None, "regressed": None, "reason": reason}


def _environment(report: dict[str, Any]) -> dict[str, Any]:
    meta = report.get("meta") or {}
    env = {k: meta.get(k) for k in ("advaudit", "python", "torch", "numpy", "platform")}
    env["onnxruntime"] = None
    env["device"] = None
    return env


def as_audit(report: dict[str, Any]) -> dict[str, Any]:
    """An audit-shaped copy of ``report`` (which should have passed :func:`validate_report`)."""
    kind = report.get("kind")
    if kind == "audit":
        audit = copy.copy(report)
        for key, default in (("steps", []), ("gates", []), ("warnings", []), ("metrics", {}), ("environment", {}),
                             ("model", {}), ("meta", {}), ("baseline", None), ("config_sha256", None)):
            audit.setdefault(key, default)
        done = all(s.get("status") == "done" for s in audit["steps"])
        audit.setdefault("passed", all(g.get("passed") for g in audit["gates"]) and done)
        audit.setdefault("verdict", "pass" if audit["passed"] else "fail")
        audit["source_kind"] = "audit"
        return audit
    if kind not in SINGLE_KINDS:
        raise ValueError(f"unknown report kind {kind!r}")
    skind = step_kind(report)
    name = STEP_NAMES.get(skind, skind)
    metrics = step_metrics(report)
    artifacts: dict[str, str] = {}
    if kind == "scan-backdoor" and report.get("triggers_dir"):
        artifacts["triggers_dir"] = report["triggers_dir"]
        artifacts["triggers_overview"] = f"{report['triggers_dir'].rstrip('/')}/overview.png"
    step = {"name": name, "kind": skind, "status": "done", "error": None, "time_s": _step_time(report),
            "metrics": metrics, "artifacts": artifacts, "report": report}
    gates = _command_gates(report, name)
    passed = bool(report.get("passed", True)) and all(g["passed"] for g in gates)
    model = report.get("model") or {}
    warnings = [f"{name}: {w}" for w in report.get("warnings", []) or []]
    if kind == "harden":
        for side in ("before", "after"):
            ws = report[side].get("warnings") or {}
            for suite, items in (ws.items() if isinstance(ws, dict) else [("", ws)]):
                warnings += [f"{name} ({side}{', ' + suite if suite else ''}): {w}" for w in items or []]
    return {
        "schema": report.get("schema"), "kind": "audit", "source_kind": kind,
        "command": report.get("command", ""), "seed": report.get("seed"), "meta": report.get("meta") or {},
        "model": model, "environment": _environment(report), "config": None, "config_sha256": None,
        "steps": [step], "metrics": {f"{name}.{k}": v for k, v in metrics.items()}, "gates": gates,
        "baseline": None, "warnings": warnings, "passed": passed, "verdict": "pass" if passed else "fail",
    }
