"""advaudit's Python API: one function per command, each taking a frozen options dataclass and
returning a typed result with ``.metrics()`` and ``.to_report()`` (see :mod:`advaudit.jobs`).

The command line calls these functions through this module (``api.attack(options, ctx)``), so a
test can replace one and check which options a command line builds.
"""

from __future__ import annotations

from .audit.job import AuditOptions, AuditResult, audit
from .jobs.attack import AttackOptions, AttackResult, attack
from .jobs.base import DataOptions, JobContext, JobResult, ModelOptions, Progress
from .jobs.defend import DefendOptions, DefendResult, defend
from .jobs.detect import (
    DetectCalibrateOptions,
    DetectCalibrateResult,
    DetectOptions,
    DetectResult,
    detect,
    detect_calibrate,
)
from .jobs.detect_evaluate import (
    DetectEvaluateOptions,
    DetectEvaluateResult,
    detect_evaluate,
)
from .jobs.harden import HardenOptions, HardenResult, harden
from .jobs.purify import (
    PurifyOptions,
    PurifyResult,
    TrainVqvaeOptions,
    VqvaeResult,
    purify,
    train_vqvae,
)
from .jobs.repair import RepairOptions, RepairResult, repair
from .jobs.scan import ScanOptions, ScanResult, scan_backdoor

__all__ = [
    "AttackOptions", "AttackResult", "AuditOptions", "AuditResult", "DataOptions", "DefendOptions",
    "DefendResult", "DetectCalibrateOptions", "DetectCalibrateResult", "DetectEvaluateOptions",
    "DetectEvaluateResult", "DetectOptions", "DetectResult", "HardenOptions", "HardenResult", "JobContext",
    "JobResult", "ModelOptions", "Progress", "PurifyOptions", "PurifyResult", "RepairOptions", "RepairResult",
    "ScanOptions", "ScanResult",
    "TrainVqvaeOptions", "VqvaeResult", "attack", "audit", "defend", "detect", "detect_calibrate",
    "detect_evaluate", "harden", "purify", "repair", "scan_backdoor", "train_vqvae",
]
