"""Evaluation of LCR detection in the layout of paper 002: kappa_nor beside kappa_adv per attack
(Table 3), AUROC of LCR as a feature (Table 4), and precision / recall / accuracy / cost of the SPRT
decision (Tables 5-6).

Wrongly labelled natural images (clean inputs the model misclassifies, "WL") count as adversarial,
as in the paper.

Sharded (``shard=``), the chunks of every set (LCR of the normal inputs and of each group, SPRT on
the normal and on the adversarial inputs) are dealt to the processes round robin as one list; each
chunk is seeded from its own first index, so the figures equal a single-process run's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import ChunkUnits, cached_map, chunk_key
from ..data.views import Rows, concat_rows, take_rows
from ..distributed import Shard
from .lcr import Calibration, calibrate
from .lcr_sprt import Detections, SPRTDetector
from .mutation import N_MUTATIONS, Mutation
from .roc import auroc, roc_curve
from .sampling import CHUNK, chunk_seed, chunk_starts, lcr_chunk
from .sprt import ADVERSARIAL, NORMAL

Z_995 = 2.5758293035489  # two-sided 99% (the reference code's confidence interval)


def ci99(v: np.ndarray) -> dict[str, float]:
    """Mean, half-width of its two-sided 99% confidence interval, and count."""
    if len(v) == 0:
        return {"mean": float("nan"), "ci99": float("nan"), "n": 0}
    half = Z_995 * float(v.std()) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "ci99": half, "n": int(len(v))}


@dataclass
class Evaluation:
    """Figures of :func:`evaluate` and the ROC curve points."""

    figures: dict[str, Any]
    fpr: np.ndarray
    tpr: np.ndarray


def evaluate(
    model: Any,
    clean_x: Rows,
    clean_y: np.ndarray,
    adv_x: Rows,
    adv_groups: np.ndarray,
    calibration: Calibration,
    *,
    n_lcr: int = N_MUTATIONS,
    seed: int = 0,
    shard: Shard | None = None,
    units: ChunkUnits | None = None,
    **sprt: Any,
) -> Evaluation:
    """Evaluate LCR and its SPRT on clean inputs against adversarial ones (grouped by attack).

    ``shard``: this process's share of a sharded run (default: one process); every rank must call
    with the same arguments, and every rank returns the same figures.  ``units``: finished chunks
    are kept there (one unit per chunk and set), and saved ones are reused instead of recomputed."""
    shard = shard or Shard.single()
    correct = model.predict(clean_x).labels == clean_y
    # sets of rows, still unconverted when the inputs are lazy views (advaudit.data.views)
    normal = take_rows(clean_x, correct)
    groups = {str(g): take_rows(adv_x, adv_groups == g) for g in dict.fromkeys(adv_groups.tolist())}
    if (~correct).any():  # wrongly labelled clean inputs, beside any WL set given in adv_x
        wrong = take_rows(clean_x, ~correct)
        groups["WL"] = concat_rows([groups["WL"], wrong]) if "WL" in groups else wrong
    mutation = calibration.mutation
    detector = SPRTDetector(model, calibration, seed=seed, **sprt)
    adv_all_x = concat_rows([xs for xs in groups.values() if len(xs)]) if groups else clean_x[:0]
    # one list of (what, set, first index) chunks over every set, dealt out together
    Key = tuple[str, str | None]
    sets: dict[Key, tuple[np.ndarray, int]] = {("lcr", None): (normal, seed)}
    sets.update({("lcr", g): (xs, seed + 1) for g, xs in groups.items() if len(xs)})
    sets.update({("sprt", "normal"): (normal, seed), ("sprt", "adversarial"): (adv_all_x, seed)})
    tasks = [(key, s) for key, (xs, _) in sets.items() for s in chunk_starts(len(xs))]

    def run(task: tuple[Key, int]) -> Any:
        key, s = task
        xs, set_seed = sets[key]
        if key[0] == "lcr":
            return lcr_chunk(model, xs[s : s + CHUNK], mutation, n_lcr, chunk_seed(set_seed, s))
        return detector.chunk(xs[s : s + CHUNK], s)

    results: dict[Key, list[Any]] = {key: [] for key in sets}
    keys = [chunk_key(what, name, s) for (what, name), s in tasks]
    for (key, _), value in zip(tasks, cached_map(shard, run, tasks, keys, units)):
        results[key].append(value)

    def lcr(key: Key) -> np.ndarray:
        return np.concatenate(results[key]) if results[key] else np.zeros(0)

    lcr_nor = lcr(("lcr", None))
    lcr_adv = {g: lcr(("lcr", g)) for g, xs in groups.items() if len(xs)}
    all_adv = np.concatenate(list(lcr_adv.values())) if lcr_adv else np.zeros(0)
    det_nor: Detections = detector.join(results[("sprt", "normal")])
    det_adv: Detections = detector.join(results[("sprt", "adversarial")])
    tp = int((det_adv.decision == ADVERSARIAL).sum())
    fp = int((det_nor.decision == ADVERSARIAL).sum())
    tn = int((det_nor.decision == NORMAL).sum())
    n_total = len(normal) + len(adv_all_x)
    seconds = det_nor.time_s + det_adv.time_s
    fpr, tpr = roc_curve(lcr_nor, all_adv)
    figures: dict[str, Any] = {
        "mutation": mutation.settings(),
        "kappa_nor_calibrated": calibration.kappa_nor,
        "table3": {"kappa_nor": ci99(lcr_nor), "kappa_adv": {g: ci99(v) for g, v in lcr_adv.items()}},
        "auroc": {g: auroc(lcr_nor, v) for g, v in lcr_adv.items()},
        "auroc_all": auroc(lcr_nor, all_adv),
        "sprt": {
            "alpha": detector.test.alpha, "beta": detector.test.beta, "mu": detector.test.mu,
            "sigma": detector.test.sigma, "p0": detector.test.p0, "p1": detector.test.p1,
            "precision": tp / max(tp + fp, 1),
            "recall": tp / max(len(adv_all_x), 1),
            "accuracy": (tp + tn) / max(n_total, 1),
            "false_positive_rate": fp / max(len(normal), 1),
            "undecided": int((det_nor.decision == -1).sum() + (det_adv.decision == -1).sum()),
            "mean_mutations": float(np.concatenate([det_nor.mutations, det_adv.mutations]).mean()),
            "mean_mutations_adversarial": float(det_adv.mutations.mean()) if len(adv_all_x) else None,
            "mean_mutations_normal": float(det_nor.mutations.mean()),
            "ms_per_input": 1000 * seconds / max(n_total, 1),
            "ms_per_input_adversarial": 1000 * det_adv.time_s / len(adv_all_x) if len(adv_all_x) else None,
            "ms_per_input_normal": 1000 * det_nor.time_s / max(len(normal), 1),
        },
        "n_normal": int(len(normal)),
        "n_adversarial": {g: int(len(xs)) for g, xs in groups.items()},
        "lcr_mutations": n_lcr,
    }
    figures["auroc_mean"] = float(np.nanmean(list(figures["auroc"].values()))) if figures["auroc"] else float("nan")
    return Evaluation(figures, fpr, tpr)


def evaluate_held_out(
    model: Any,
    clean_x: Rows,
    clean_y: np.ndarray,
    adv_x: Rows,
    adv_groups: np.ndarray,
    calibration: Calibration | None,
    mutation: Mutation,
    *,
    n_lcr: int = N_MUTATIONS,
    seed: int = 0,
    shard: Shard | None = None,
    units: ChunkUnits | None = None,
    **sprt: Any,
) -> tuple[Evaluation, Calibration, int]:
    """:func:`evaluate` with ``calibration``; without one, calibrate (``mutation``) on the first half of
    the clean inputs and evaluate on the other half.  Returns the evaluation, the calibration used and
    how many clean inputs calibrated it (0 when one was given).  ``units``: see :func:`evaluate`."""
    half = 0
    if calibration is None:
        half = len(clean_x) // 2
        calibration = calibrate(
            model, take_rows(clean_x, slice(0, half)), clean_y[:half], mutation, n_mutations=n_lcr, seed=seed,
            shard=shard, units=units,
        )
    ev = evaluate(
        model, take_rows(clean_x, slice(half, None)), clean_y[half:], adv_x, adv_groups, calibration, n_lcr=n_lcr,
        seed=seed, shard=shard, units=units, **sprt,
    )
    return ev, calibration, half


def adversarial_groups(path: str | Path, n: int) -> np.ndarray:
    """Attack name of each of the ``n`` adversarial examples in ``path`` (the ``attack`` array of
    ``advaudit attack --save-adv`` files; ``"adversarial"`` when the file has none)."""
    with np.load(path, allow_pickle=False) as f:
        if "attack" in f.files and len(f["attack"]) == n:
            return np.array([str(a).split(":")[0] for a in f["attack"]])
    return np.array(["adversarial"] * n)


def roc_png(path: str, fpr: np.ndarray, tpr: np.ndarray, title: str) -> None:
    """Draw the ROC curve as a PNG (Pillow only)."""
    from PIL import Image, ImageDraw

    from ..io import write_atomic

    size, pad = 360, 40
    img = Image.new("RGB", (size + 2 * pad, size + 2 * pad), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([pad, pad, pad + size, pad + size], outline="black")
    d.line([pad, pad + size, pad + size, pad], fill=(180, 180, 180))
    pts = [(pad + float(f) * size, pad + size - float(t) * size) for f, t in zip(fpr, tpr)] + [(pad + size, pad)]
    d.line(pts, fill=(200, 30, 30), width=2)
    d.text((pad, 10), title, fill="black")
    d.text((pad + size // 2 - 40, pad + size + 12), "false positive rate", fill="black")
    d.text((4, pad + size // 2), "TPR", fill="black")
    write_atomic(path, lambda p: img.save(p, format="PNG"))
