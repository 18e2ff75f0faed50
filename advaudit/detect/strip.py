"""STRIP: run-time detection of inputs that carry a backdoor trigger.

Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC 2019,
https://arxiv.org/abs/1902.06531.  Superimpose the input on ``overlays`` random clean images
(saturating sum, as the authors' code) and average the Shannon entropy of the model's predictions.
A trigger dominates every blend, so a trojaned input keeps its (target) label: low entropy.

:meth:`STRIPDetector.calibrate` keeps the clean inputs as the overlay pool and sets the threshold
at the ``frr`` quantile of their entropies (the false rejection rate on clean data).  The score is
minus the entropy (higher = more suspicious), so an input is flagged when its entropy falls below
the threshold.  The pool is saved beside the calibration JSON (``calib.strip-pool.npz``).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.views import Rows
from ..distributed import Shard
from ..errors import DataError, UsageError, first_line
from ..models import Model
from .base import Detector, ThresholdCalibration

POOL_SUFFIX = ".strip-pool.npz"
BLENDS_PER_CALL = 8192
"""Blended images per model call."""


def pool_path(calibration_path: str | Path) -> Path:
    """Where the overlay pool of the calibration at ``calibration_path`` is kept: ``calib.json`` ->
    ``calib.strip-pool.npz`` in the same folder."""
    p = Path(calibration_path)
    return p.with_name(p.stem + POOL_SUFFIX)


@dataclass
class StripCalibration(ThresholdCalibration):
    """A STRIP threshold (minus the entropy threshold) and the clean overlay pool it was set with;
    the JSON names the pool file (``pool_file``), the pool itself is saved in that file."""

    pool_file: str = ""
    pool: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.float32), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: every field but the pool array."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "pool"}

    def save(self, path: str | Path) -> Path:
        """Write the pool (``calib.strip-pool.npz``) and then the JSON that names it, both atomically."""
        from ..io import write_atomic

        target = pool_path(path)

        def write_pool(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez_compressed(f, pool=self.pool)

        write_atomic(target, write_pool)
        self.pool_file = target.name
        return super().save(path)

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path) -> StripCalibration:
        """The calibration at ``path`` with its pool read from the file it names."""
        base = ThresholdCalibration.from_dict(d, path)
        name = str(d.get("pool_file", ""))
        pool_file = path.parent / name
        if not name or Path(name).name != name or not pool_file.is_file():
            raise DataError(f"the STRIP overlay pool of {path} is missing ({name or 'no pool_file'})",
                            "calibrate again with 'advaudit detect calibrate --method strip'")
        try:
            with np.load(pool_file, allow_pickle=False) as z:
                pool = np.asarray(z["pool"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{pool_file} is not a STRIP overlay pool ({first_line(exc, 120)})") from None
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return cls(**fields, pool_file=name, pool=pool)

    def summary(self) -> str:
        """The entropy threshold and the false rejection rate it was chosen for."""
        return (f"entropy threshold = {self.extra['entropy_threshold']:.4f} (false rejection rate {self.frr:g} on "
                f"{self.n_inputs} clean inputs, {self.params.get('overlays')} overlays; pool {self.pool_file})")


@dataclass(frozen=True, kw_only=True)
class STRIPDetector(Detector):
    """STRIP (Gao et al. 2019): flags inputs whose predictions stay confident under superimposition.

    ``overlays``: clean images blended with each input; ``frr``: the false rejection rate on clean
    data the threshold is set for."""

    name: ClassVar[str] = "strip"
    needs_labels: ClassVar[bool] = False

    overlays: int = 64
    frr: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.frr < 0.5:
            raise UsageError(f"frr must be in (0, 0.5), got {self.frr:g}")
        if self.overlays < 2:
            raise UsageError(f"overlays must be at least 2, got {self.overlays}")

    def entropy(self, model: Model, pool: np.ndarray, x: Rows, *, seed: int = 0) -> np.ndarray:
        """Mean prediction entropy of each input blended with ``overlays`` images of ``pool``."""
        lo, hi = model.spec.range
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randint(0, len(pool), (len(x), self.overlays), generator=gen).numpy()
        out = np.empty(len(x))
        per = max(1, BLENDS_PER_CALL // self.overlays)
        for i in range(0, len(x), per):
            xb = x[i : i + per]
            blends = np.clip(xb[:, None] + pool[pick[i : i + per]] - lo, lo, hi)
            p = model.query(blends.reshape(-1, *x.shape[1:]), batch_size=BLENDS_PER_CALL).probs
            ent = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
            out[i : i + per] = ent.reshape(len(xb), self.overlays).mean(axis=1)
        return out

    def calibrate(self, model: Model, x: Rows, y: np.ndarray | None, *, seed: int = 0,
                  shard: Shard | None = None) -> StripCalibration:
        """Keep ``x`` as the overlay pool; threshold = the ``frr`` quantile of their entropies
        (labels are not needed)."""
        if len(x) < 10:
            raise DataError(f"STRIP needs at least 10 clean images to overlay, got {len(x)}")
        pool = np.asarray(x[0 : len(x)], dtype=np.float32)
        threshold = float(np.quantile(self.entropy(model, pool, pool, seed=seed), self.frr))
        return StripCalibration(
            method=self.name, threshold=-threshold, frr=self.frr, n_inputs=len(pool), model_sha256=model.sha256,
            model_path=str(model.path), seed=seed, params=self.params(),
            extra={"entropy_threshold": threshold}, pool=pool,
        )

    def score(self, model: Model, calibration: StripCalibration, x: Rows, *, seed: int = 0,
              shard: Shard | None = None) -> np.ndarray:
        """Minus the mean entropy of each input's blends with the calibration's pool."""
        return -self.entropy(model, calibration.pool, x, seed=seed)

    @classmethod
    def load_calibration(cls, d: dict[str, Any], path: Path) -> StripCalibration:
        """A STRIP calibration and its overlay pool."""
        return StripCalibration.from_dict(d, path)
