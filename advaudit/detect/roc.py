"""Ranking figures of a detector's scores: AUROC and the ROC curve (normal = negatives)."""

from __future__ import annotations

import numpy as np


def auroc(scores_neg: np.ndarray, scores_pos: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged)."""
    if len(scores_neg) == 0 or len(scores_pos) == 0:
        return float("nan")
    scores = np.concatenate([scores_neg, scores_pos])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[len(scores_neg) :].sum() - len(scores_pos) * (len(scores_pos) + 1) / 2.0
    return float(u / (len(scores_neg) * len(scores_pos)))


def roc_curve(scores_neg: np.ndarray, scores_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates over all thresholds (descending), starting at (0, 0)."""
    thresholds = np.unique(np.concatenate([scores_neg, scores_pos]))[::-1]
    fpr = np.array([0.0] + [float((scores_neg >= t).mean()) for t in thresholds])
    tpr = np.array([0.0] + [float((scores_pos >= t).mean()) for t in thresholds])
    return fpr, tpr
