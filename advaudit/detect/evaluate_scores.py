"""Evaluation of a detector other than LCR on clean inputs against adversarial (or trojaned) ones:
AUROC of its score per group of the adversarial file, and precision / recall / false positive rate
of its decisions.

LCR keeps its own evaluation (:mod:`advaudit.detect.evaluate`: Table 3 layout, wrongly labelled
inputs counted as adversarial, chunked and checkpointed).  Here every clean input is normal and every
input of the adversarial file is adversarial, since detectors such as STRIP look for triggers rather
than for decision-boundary proximity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.views import Rows, take_rows
from .base import Decisions, Detector
from .evaluate import Evaluation, ci99
from .roc import auroc, roc_curve

if TYPE_CHECKING:
    from ..models import Model


def evaluate_detector(
    detector: Detector, model: Model, clean_x: Rows, adv_x: Rows, adv_groups: np.ndarray,
    calibration: Any, *, seed: int = 0,
) -> Evaluation:
    """Score and decide the clean inputs and each group of adversarial ones; AUROC per group and over
    all of them, decision figures over all of them."""
    groups = {str(g): take_rows(adv_x, adv_groups == g) for g in dict.fromkeys(adv_groups.tolist())}
    normal = detector.decide(model, calibration, clean_x, seed=seed)
    adv = {g: detector.decide(model, calibration, xs, seed=seed) for g, xs in groups.items() if len(xs)}
    all_adv = np.concatenate([d.score for d in adv.values()]) if adv else np.zeros(0)
    n_adv = sum(len(d.verdict) for d in adv.values())
    tp = sum(int(d.flagged.sum()) for d in adv.values())
    fp, tn = int(normal.flagged.sum()), int((normal.verdict == "normal").sum())
    adv_time = sum(d.time_s for d in adv.values())
    fpr, tpr = roc_curve(normal.score, all_adv)
    auroc_groups = {g: auroc(normal.score, d.score) for g, d in adv.items()}
    figures: dict[str, Any] = {
        "method": detector.name,
        "detector": detector.params(),
        "calibration": calibration.describe(),
        "score": {"normal": ci99(normal.score), "adversarial": {g: ci99(d.score) for g, d in adv.items()}},
        "auroc": auroc_groups,
        "auroc_all": auroc(normal.score, all_adv),
        "decisions": _decision_figures(normal, adv, tp, fp, tn, n_adv, adv_time),
        "n_normal": int(len(clean_x)),
        "n_adversarial": {g: int(len(xs)) for g, xs in groups.items()},
    }
    figures["auroc_mean"] = float(np.nanmean(list(auroc_groups.values()))) if auroc_groups else float("nan")
    return Evaluation(figures, fpr, tpr)


def _decision_figures(normal: Decisions, adv: dict[str, Decisions], tp: int, fp: int, tn: int, n_adv: int,
                      adv_time: float) -> dict[str, Any]:
    """Precision, recall, accuracy, false positive rate, undecided count and cost per input."""
    n_normal = len(normal.verdict)
    n_total = n_normal + n_adv
    undecided = int((normal.verdict == "undecided").sum()) + sum(int((d.verdict == "undecided").sum())
                                                                 for d in adv.values())
    return {
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(n_adv, 1),
        "accuracy": (tp + tn) / max(n_total, 1),
        "false_positive_rate": fp / max(n_normal, 1),
        "undecided": undecided,
        "ms_per_input": 1000 * (normal.time_s + adv_time) / max(n_total, 1),
        "ms_per_input_adversarial": 1000 * adv_time / n_adv if n_adv else None,
        "ms_per_input_normal": 1000 * normal.time_s / max(n_normal, 1),
    }


def held_out(detector: Detector, model: Model, clean_x: Rows, clean_y: np.ndarray | None, calibration: Any,
             *, seed: int = 0) -> tuple[Any, int]:
    """``calibration`` as given (and 0), or one made on the first half of the clean inputs (and that
    half's size): the evaluation then uses the other half."""
    if calibration is not None:
        return calibration, 0
    half = len(clean_x) // 2
    y = None if clean_y is None else clean_y[:half]
    return detector.calibrate(model, take_rows(clean_x, slice(0, half)), y, seed=seed), half

