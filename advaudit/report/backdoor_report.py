"""The ``advaudit scan-backdoor`` report, now built by the scan job: this name is kept for callers of
``advaudit.report.backdoor_report.scan_report`` and loads the job (and the backdoor package) only
when used, so :mod:`advaudit.report` itself does not import :mod:`advaudit.backdoor`."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``scan_report``: :func:`advaudit.jobs.scan.scan_report`."""
    if name == "scan_report":
        from ..jobs.scan import scan_report

        return scan_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
