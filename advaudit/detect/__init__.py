"""Run-time detection of adversarial inputs behind one contract (:class:`Detector`): LCR + SPRT
(nMutant), STRIP, and any detector a plugin registers, found by name with :func:`get_detector`."""

from .base import (
    Decisions,
    Detector,
    ThresholdCalibration,
    get_detector,
    load_calibration,
)
from .lcr import (
    Calibration,
    Detections,
    LCRDetector,
    Mutation,
    SPRTDetector,
    calibrate,
    label_change_rates,
)
from .roc import auroc, roc_curve
from .strip import StripCalibration, STRIPDetector

__all__ = [
    "Calibration",
    "Decisions",
    "Detections",
    "Detector",
    "LCRDetector",
    "Mutation",
    "SPRTDetector",
    "STRIPDetector",
    "StripCalibration",
    "ThresholdCalibration",
    "auroc",
    "calibrate",
    "get_detector",
    "label_change_rates",
    "load_calibration",
    "roc_curve",
]
