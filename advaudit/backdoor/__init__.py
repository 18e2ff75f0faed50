"""Model-level backdoor scanning (Neural Cleanse, MM-BD).

    from advaudit.backdoor import NeuralCleanse, scan_model
    result = NeuralCleanse().scan(model, x, y, seed=0)
    combined = scan_model(model, x, y, methods=["neural-cleanse", "mm-bd"], seed=0)

The backdoor implants that test the scanners are test-only code: ``advaudit_testing.implants`` in
``plugins/advaudit-testing``.
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
