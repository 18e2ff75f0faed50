"""Files an attack run leaves behind: verified adversarial examples (.npz) and a picture of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import example_grid, write_npz
from .runner import AttackRun
from .suites import AttackChoice

EXAMPLE_ROWS = 8


def save_adversarial(path: str | Path, run: AttackRun, choices: list[AttackChoice]) -> Path:
    """Write the verified adversarial examples at the largest eps (what ``--save-adv`` writes):
    ``x``, ``y``, ``adv_label``, ``x_clean``, ``index``, ``attack`` (the attack that found each),
    ``eps``, ``norm``.  The images are streamed into the compressed ``.npz`` a block at a time (from the
    run's temporary file and its lazily converted inputs), never held whole."""
    e = max(run.eps)
    ok = run.adv_by[e] >= 0
    rows = np.flatnonzero(ok)
    names = np.array([str(c) for c in choices])
    arrays: dict[str, Any] = {
        "x": _Rows(run.adv[e], rows),
        "y": run.y[ok],
        "adv_label": run.adv_labels[e][ok],
        "x_clean": _Rows(run.x, rows),
        "index": rows,
        "attack": names[run.adv_by[e][ok]] if ok.any() else np.array([], dtype=names.dtype),
        "eps": np.float64(e),
        "norm": np.array(run.norm),
    }

    return write_npz(path, arrays)


class _Rows:
    """Rows ``rows`` of an array or lazy view, streamed into the archive block by block (float32)."""

    def __init__(self, source: Any, rows: np.ndarray) -> None:
        self.source, self.rows = source, rows
        self.shape = (len(rows), *source.shape[1:])
        self.dtype = np.dtype(np.float32)

    def blocks(self, values: int = 2**20) -> Any:
        step = max(1, values // max(1, int(np.prod(self.shape[1:]))))
        for s in range(0, len(self.rows), step):
            yield np.ascontiguousarray(self.source[self.rows[s : s + step]], dtype=self.dtype)


def example_grid_for_run(
    path: str | Path, run: AttackRun, class_names: tuple[str, ...] | None, bounds: tuple[float, float]
) -> Path:
    """PNG grid of up to 8 verified adversarial examples at the largest eps (clean ones if none)."""
    e = max(run.eps)
    idx = np.flatnonzero(run.adv_by[e] >= 0)[:EXAMPLE_ROWS]
    if len(idx) == 0:
        idx = np.arange(min(EXAMPLE_ROWS, run.n))

    def name(label: int) -> str:
        return class_names[label] if class_names and label < len(class_names) else str(label)

    clean = [(name(run.clean_labels[i]), float(run.clean_probs[i].max())) for i in idx]
    adv = [(name(run.adv_labels[e][i]), float(run.adv_probs[e][i].max())) for i in idx]
    title = f"clean | perturbation | adversarial ({run.norm} eps {e:g})"
    return example_grid(path, run.x[idx], run.adv[e][idx], clean, adv, bounds[0], bounds[1], title)
