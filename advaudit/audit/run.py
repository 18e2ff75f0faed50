"""Run an audit from Python with plain arguments: :func:`run_audit` builds the
:class:`~advaudit.audit.job.AuditOptions` and calls the audit job (:mod:`advaudit.audit.job`),
where the orchestration, the step store and the baseline ratchet live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..checkpoint import comparable
from ..jobs.base import JobContext
from .config import AuditConfig
from .job import (
    REPORT_NAME,
    AuditOptions,
    audit,
    environment,
    fingerprint,
    load_baseline,
    open_audit_model,
)

Log = Callable[[str], None]


def _silent(message: str) -> None:
    """The default log: say nothing."""


def run_audit(
    model_path: str | Path,
    config: AuditConfig,
    report_dir: str | Path,
    *,
    seed: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    baseline: str | Path | None = None,
    tolerance: float | None = None,
    resume: bool = False,
    command: str = "advaudit audit",
    progress: Callable[[str, int, int], None] | None = None,
    log: Log = _silent,
) -> dict[str, Any]:
    """Run the audit and write ``REPORT_DIR/report.json``; returns the report."""
    options = AuditOptions(
        model=str(model_path), config=config, report_dir=str(report_dir),
        baseline=None if baseline is None else str(baseline), tolerance=tolerance, seed=seed, workers=workers,
        device=device, resume=resume, command=command,
    )
    return audit(options, JobContext(progress=progress, log=log)).to_report()


__all__ = [
    "REPORT_NAME", "comparable", "environment", "fingerprint", "load_baseline", "open_audit_model", "run_audit",
]
