"""The ``advaudit detect evaluate`` report (schema ``advaudit.report/1``, kind ``detect-evaluate``)."""

from __future__ import annotations

from typing import Any

from .roc import downsample_roc
from .writer import base_report, model_section


def detect_evaluate_report(ev: Any, model: Any, data: Any, command: list[str] | str, seed: int, **extra: Any) -> dict[str, Any]:
    """kappa per group (Table 3), AUROC, SPRT figures and the thinned ROC curve of an evaluation."""
    report = base_report(command, seed)
    report.update({
        "kind": "detect-evaluate", "model": model_section(model), "data": data.dataset.describe(), **extra,
        **ev.figures, "roc": downsample_roc(ev.fpr, ev.tpr),
    })
    return report
