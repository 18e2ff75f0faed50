"""The ``advaudit detect evaluate`` report (schema ``advaudit.report/1``, kind ``detect-evaluate``).

Kept for callers of :func:`detect_evaluate_report`; the report is built by
:class:`advaudit.jobs.detect_evaluate.DetectEvaluateResult`."""

from __future__ import annotations

from typing import Any

from .writer import base_report, model_section


def detect_evaluate_report(ev: Any, model: Any, data: Any, command: list[str] | str, seed: int,
                           adversarial: dict[str, Any] | None = None) -> dict[str, Any]:
    """kappa per group (Table 3), AUROC, SPRT figures and the thinned ROC curve of an LCR evaluation."""
    from ..jobs.detect_evaluate import DetectEvaluateResult

    method = str(ev.figures.get("method", "lcr"))
    return DetectEvaluateResult(method, ev, model_section(model), data.dataset.describe(), adversarial,
                                envelope=base_report(command, seed)).to_report()
