"""Files an attack run leaves behind: verified adversarial examples (.npz) and a picture of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..attacks.runner import AttackRun
from ..attacks.suites import AttackChoice
from .images import example_grid
from .writer import write_atomic

EXAMPLE_ROWS = 8


def save_adversarial(path: str | Path, run: AttackRun, choices: list[AttackChoice]) -> Path:
    """Write the verified adversarial examples at the largest eps (what ``--save-adv`` writes):
    ``x``, ``y``, ``adv_label``, ``x_clean``, ``index``, ``attack`` (the attack that found each),
    ``eps``, ``norm``."""
    e = max(run.eps)
    ok = run.adv_by[e] >= 0
    names = np.array([str(c) for c in choices])
    arrays = {
        "x": run.adv[e][ok],
        "y": run.y[ok],
        "adv_label": run.adv_labels[e][ok],
        "x_clean": run.x[ok],
        "index": np.flatnonzero(ok),
        "attack": names[run.adv_by[e][ok]] if ok.any() else np.array([], dtype=names.dtype),
        "eps": np.float64(e),
        "norm": np.array(run.norm),
    }

    def write(p: Any) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **arrays)

    return write_atomic(path, write)


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
