"""The ``advaudit scan-backdoor`` report (schema ``advaudit.report/1``, kind ``scan-backdoor``)."""

from __future__ import annotations

from typing import Any

from ..backdoor.scan import CombinedScan
from .writer import base_report, model_section


def scan_report(
    scan: CombinedScan, model: Any, data: Any, command: list[str] | str, seed: int, *, fail_on_backdoor: bool = False
) -> dict[str, Any]:
    """Verdict, suspected targets, per-class figures and each method's evidence."""
    report = base_report(command, seed)
    report.update(
        {
            "kind": "scan-backdoor",
            "model": model_section(model),
            "data": None if data is None else data.dataset.describe(),
            "methods": [r.method for r in scan.results],
            "verdict": scan.verdict,
            "suspected_targets": scan.suspected_targets,
            "classes": scan.classes(),
            "evidence": {r.method: r.to_dict() for r in scan.results},
            "time_s": round(scan.time_s, 3),
            "gates": {"fail_on_backdoor": bool(fail_on_backdoor)},
            "passed": not (fail_on_backdoor and scan.verdict == "backdoored"),
        }
    )
    return report
