"""advaudit's Python API: one function per command, each taking a frozen options dataclass and
returning a typed result with ``.metrics()`` and ``.to_report()`` (see :mod:`advaudit.jobs`).

The command line calls these functions through this module (``api.attack(options, ctx)``), so a
test can replace one and check which options a command line builds.
"""

from __future__ import annotations

from .jobs.base import DataOptions, JobContext, JobResult, ModelOptions, Progress

# -- attack, defend, harden, purify ---------------------------------------------------------------

# -- scan-backdoor, audit ---------------------------------------------------------------------------
from .jobs.audit import AuditOptions, AuditResult, audit
from .jobs.scan import ScanOptions, ScanResult, scan_backdoor

# -- detect ------------------------------------------------------------------------------------------
from .jobs.detect import (  # noqa: E402
    DetectCalibrateOptions, DetectCalibrateResult, DetectOptions, DetectResult, detect, detect_calibrate,
)
from .jobs.detect_evaluate import DetectEvaluateOptions, DetectEvaluateResult, detect_evaluate  # noqa: E402

__all__ = [
    "DataOptions", "JobContext", "JobResult", "ModelOptions", "Progress",
    # -- attack, defend, harden, purify

    # -- scan-backdoor, audit
    "AuditOptions", "AuditResult", "ScanOptions", "ScanResult", "audit", "scan_backdoor",

    # -- detect
    "DetectCalibrateOptions", "DetectCalibrateResult", "DetectOptions", "DetectResult", "DetectEvaluateOptions",
    "DetectEvaluateResult", "detect", "detect_calibrate", "detect_evaluate",

]
