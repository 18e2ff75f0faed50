"""A ROC curve small enough for a JSON report: at most ``max_points`` points, same shape."""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_POINTS = 200


def downsample_roc(fpr: Any, tpr: Any, max_points: int = MAX_POINTS) -> dict[str, list[float]]:
    """``{"fpr": [...], "tpr": [...]}`` with at most ``max_points`` points (ends kept).

    Collinear interior points are dropped first (they add nothing to the drawn curve); if more than
    ``max_points`` remain, points are kept at equal steps of the curve's L1 length (fpr + tpr, which
    grows monotonically along a ROC curve), so corners of the staircase are not lost in one region.
    """
    f = np.asarray(fpr, dtype=np.float64)
    t = np.asarray(tpr, dtype=np.float64)
    if f.shape != t.shape or f.ndim != 1:
        raise ValueError("fpr and tpr must be 1-D arrays of the same length")
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    if len(f) > max_points:
        df, dt = np.diff(f), np.diff(t)
        turn = np.abs(df[:-1] * dt[1:] - dt[:-1] * df[1:]) > 1e-12
        keep = np.concatenate([[True], turn, [True]])
        f, t = f[keep], t[keep]
    if len(f) > max_points:
        s = f + t
        idx = np.searchsorted(s, np.linspace(s[0], s[-1], max_points)).clip(0, len(f) - 1)
        idx = np.unique(np.concatenate([[0], idx, [len(f) - 1]]))
        f, t = f[idx], t[idx]
    return {"fpr": [round(float(v), 6) for v in f], "tpr": [round(float(v), 6) for v in t]}
