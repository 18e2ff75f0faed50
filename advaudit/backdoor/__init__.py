"""Model-level backdoor scanning (Neural Cleanse, MM-BD) and backdoor implants to test them.

    from advaudit.backdoor import NeuralCleanse, scan_model
    result = NeuralCleanse().scan(model, x, y, seed=0)
    combined = scan_model(model, x, y, methods=["neural-cleanse", "mm-bd"], seed=0)
"""

from .base import BackdoorScanner, ClassEvidence, ScanContext, ScanResult
from .mad import mad_outliers
from .mmbd import MMBD
from .neural_cleanse import NCConfig, NeuralCleanse, reconstruct_triggers
from .scan import CombinedScan, scan_model

__all__ = [
    "MMBD", "BackdoorScanner", "ClassEvidence", "CombinedScan", "NCConfig", "NeuralCleanse",
    "ScanContext", "ScanResult", "mad_outliers", "reconstruct_triggers", "scan_model",
]
