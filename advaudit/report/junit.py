"""JUnit XML so CI systems (GitHub, GitLab, Jenkins) show each gate and each step as a test case."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from . import fmt
from .normalize import as_audit

# Characters XML 1.0 forbids (control characters other than tab, newline, carriage return).
_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _s(v: Any) -> str:
    return _BAD_XML.sub("\ufffd", "" if v is None else str(v))


def _time(v: Any) -> str:
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    return f"{float(v):.3f}" if number and v == v and v >= 0 else "0.000"


def _timestamp(created: Any) -> str | None:
    """ISO 8601 without the zone offset, as the JUnit XSD's ``timestamp`` wants."""
    if not isinstance(created, str) or "T" not in created:
        return None
    return re.sub(r"(Z|[+-]\d\d:\d\d)$", "", created)


def render_junit(report: dict[str, Any]) -> str:
    """A ``<testsuites>`` document: suite "advaudit", one testcase per gate and one per step."""
    a = as_audit(report)
    gates = a.get("gates") or []
    steps = a.get("steps") or []
    failures = sum(1 for g in gates if not g.get("passed"))
    errors = sum(1 for s in steps if s.get("status") != "done")
    times = [s.get("time_s") for s in steps]
    total_time = sum(float(t) for t in times if isinstance(t, (int, float)) and not isinstance(t, bool))
    counts = {"tests": str(len(gates) + len(steps)), "failures": str(failures), "errors": str(errors),
              "time": _time(total_time)}

    root = ET.Element("testsuites", {"name": "advaudit", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "advaudit", **counts, "skipped": "0"})
    ts = _timestamp((a.get("meta") or {}).get("created"))
    if ts:
        suite.set("timestamp", ts)
    props = ET.SubElement(suite, "properties")
    model = a.get("model") or {}
    for name, value in (("verdict", a.get("verdict")), ("model", model.get("path")), ("model.sha256",
                                                                                      model.get("sha256")),
                        ("seed", a.get("seed")), ("command", a.get("command")), ("report.kind", a.get("source_kind")),
                        ("advaudit", (a.get("meta") or {}).get("advaudit"))):
        if value is not None:
            ET.SubElement(props, "property", {"name": name, "value": _s(value)})

    for g in gates:
        case = ET.SubElement(suite, "testcase", {"classname": "advaudit.gates",
                                                 "name": _s(g.get("gate") or g.get("metric")), "time": "0.000"})
        detail = (f"metric {g.get('metric')}: value {fmt.value(g.get('value'))} {g.get('op', '')} threshold "
                  f"{fmt.value(g.get('threshold'))}; baseline {fmt.value(g.get('baseline'))}"
                  + ("; regressed" if g.get("regressed") else ""))
        if not g.get("passed"):
            fail = ET.SubElement(case, "failure", {"message": _s(g.get("reason") or "gate failed"),
                                                   "type": "GateFailed"})
            fail.text = _s(detail)
        else:
            ET.SubElement(case, "system-out").text = _s(f"{detail}; {g.get('reason', '')}")
    for s in steps:
        case = ET.SubElement(suite, "testcase", {"classname": "advaudit.steps", "name": _s(s.get("name")),
                                                 "time": _time(s.get("time_s"))})
        if s.get("status") != "done":
            err = ET.SubElement(case, "error", {"message": _s(s.get("error") or "step failed"), "type": "StepFailed"})
            err.text = _s(f"step {s.get('name')} ({s.get('kind')}) failed: {s.get('error') or 'no report'}")
        else:
            metrics = s.get("metrics") or {}
            ET.SubElement(case, "system-out").text = _s("\n".join(f"{k} = {fmt.metric(k, v)}" for k,
                                                                  v in metrics.items()))
    warnings = a.get("warnings") or []
    if warnings:
        ET.SubElement(suite, "system-err").text = _s("\n".join(f"warning: {w}" for w in warnings))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
