"""Before/after evaluation for ``advaudit harden``: clean accuracy and robust accuracy per suite.

Uses :func:`advaudit.attacks.runner.run_attacks` with the named suites, so every adversarial example
is verified in the model's deployment runtime (ONNX Runtime for .onnx files): the hardened model is
evaluated from the exported file, not from the torch module that was trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..attacks.runner import Progress, run_attacks
from ..attacks.suites import get_suite
from ..data.views import Rows
from ..models import Model


def evaluate_suites(model: Model, x: Rows, y: np.ndarray, eps: float, suites: list[str], *,
                    batch_size: int = 256, seed: int = 0, progress: Progress | None = None) -> dict[str, Any]:
    """``{"clean_accuracy", "robust_accuracy": {suite: acc}, "results": {suite: rows}}`` at L-inf ``eps``."""
    clean = float((model.predict(x, batch_size=batch_size).labels == y).mean()) if len(x) else 0.0
    out: dict[str, Any] = {"n": int(len(x)), "eps": eps, "clean_accuracy": clean, "robust_accuracy": {},
                           "results": {}, "warnings": {}}
    for name in suites:
        suite = get_suite(name)
        run = run_attacks(model, x, y, list(suite.attacks), [eps], norm="linf", cascade=suite.cascade,
                          batch_size=batch_size, seed=seed, progress=progress, keep_adversarial="none")
        out["robust_accuracy"][name] = run.robust_by_eps[run.eps[0]]
        out["results"][name] = run.results()
        out["warnings"][name] = run.warnings
    return out
