"""Run-time detection of adversarial inputs: LCR + SPRT (nMutant) and STRIP."""

from .lcr import Calibration, Detections, LCRDetector, Mutation, auroc, calibrate, label_change_rates, roc_curve
from .strip import STRIPDetector, StripResult

__all__ = [
    "Calibration",
    "Detections",
    "LCRDetector",
    "Mutation",
    "STRIPDetector",
    "StripResult",
    "auroc",
    "calibrate",
    "label_change_rates",
    "roc_curve",
]
