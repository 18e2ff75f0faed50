"""Label Change Rate (LCR) detection of adversarial inputs (nMutant, paper 002).

The LCR of an input is the fraction of its random mutations that the model labels differently from
the input itself.  Adversarial inputs sit near a decision boundary and have a far higher LCR than
normal ones (kappa_adv >> kappa_nor, paper Table 3).

* :func:`calibrate` estimates kappa_nor on correctly classified clean inputs (mean plus a one-sided
  99% confidence margin) and records the mutation settings and the model's sha256;
* :class:`LCRDetector` is the detector contract (:mod:`advaudit.detect.base`) over it: ``score`` is
  the LCR (:mod:`advaudit.detect.sampling`), ``decide`` the sequential probability ratio test of
  Algorithm 1 (:mod:`advaudit.detect.lcr_sprt`).

Mutations are described by :class:`~advaudit.detect.mutation.Mutation`.  The names this module has
always offered (``Mutation``, ``Detections``, ``auroc``, ``CHUNK``, ...) are re-exported from the
modules that now hold them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..checkpoint import ChunkUnits
from ..data.views import Rows, take_rows
from ..distributed import Shard
from ..errors import DataError, UsageError, first_line
from ..models import Model
from ..io import write_json
from .base import CALIBRATION_SCHEMA, Decisions, Detector, read_calibration_document
from .lcr_sprt import FIRST_ROUND, SIGMA_FRACTION, Detections, SPRTDetector, sprt_test
from .model_mutation import select_mutants
from .mutation import (
    AUTO,
    DEFAULT_MUTATION,
    DEFAULT_RADII,
    DEFAULT_RATE,
    N_MUTATIONS,
    Mutation,
)
from .roc import auroc, roc_curve
from .sampling import (
    CHUNK,
    MAX_BATCH_IMAGES,
    QUERY_BATCH,
    chunk_seed,
    chunk_starts,
    label_change_rates,
    lcr_chunk,
    mutation_budget,
)
from .sprt import ADVERSARIAL, ALPHA, BETA, MAX_MUTATIONS, MU, NORMAL, SPRT, UNDECIDED

__all__ = [
    "ADVERSARIAL", "AUTO", "CALIBRATION_SCHEMA", "CHUNK", "DEFAULT_MUTATION", "DEFAULT_RADII", "DEFAULT_RATE",
    "FIRST_ROUND", "MAX_BATCH_IMAGES", "NORMAL", "QUERY_BATCH", "SIGMA_FRACTION", "SPRT", "UNDECIDED", "Z_99",
    "Calibration", "Detections", "LCRDetector", "Mutation", "SPRTDetector", "auroc", "calibrate", "chunk_seed",
    "chunk_starts", "label_change_rates", "lcr_chunk", "mutation_budget", "roc_curve",
]

Z_99 = 2.3263478740408408  # one-sided 99% normal quantile


@dataclass
class Calibration:
    """kappa_nor and everything needed to check that a detector uses it as calibrated."""

    method: ClassVar[str] = "lcr"  # not written: LCR files predate the method field

    kappa_nor: float
    lcr_mean: float
    lcr_std: float
    margin: float
    n_inputs: int
    n_mutations: int
    mutation: Mutation
    model_sha256: str
    model_path: str
    seed: int
    schema: str = CALIBRATION_SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (no ``method`` field: files without one are LCR calibrations)."""
        d = asdict(self)
        d["mutation"] = {**self.mutation.settings(), "mutants": list(self.mutation.mutants)}
        return d

    def save(self, path: str | Path) -> Path:
        """Write the JSON document atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read an LCR calibration file (one-line :class:`DataError` when it is none or damaged)."""
        return cls.from_document(read_calibration_document(path), Path(path))

    @classmethod
    def from_document(cls, d: dict[str, Any], p: Path) -> Calibration:
        """The calibration in the JSON document ``d`` read from ``p``, its rates checked."""
        try:
            m = d["mutation"]
            if not isinstance(m, dict):
                raise TypeError("mutation")
            mutation = Mutation.parse(m["operator"], m["radius"], tuple(int(s) for s in m.get("mutants", ())))
            cal = cls(
                kappa_nor=float(d["kappa_nor"]), lcr_mean=float(d["lcr_mean"]), lcr_std=float(d["lcr_std"]),
                margin=float(d["margin"]), n_inputs=int(d["n_inputs"]), n_mutations=int(d["n_mutations"]),
                mutation=mutation.check(), model_sha256=str(d["model_sha256"]), model_path=str(d["model_path"]),
                seed=int(d["seed"]), extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            field_name = first_line(exc, 80)
            raise DataError(f"{p} is a damaged calibration file (field {field_name})") from None
        rates = {"kappa_nor": cal.kappa_nor, "lcr_mean": cal.lcr_mean, "lcr_std": cal.lcr_std, "margin": cal.margin}
        bad = next((k for k, v in rates.items() if not (math.isfinite(v) and 0.0 <= v <= 1.0)), None)
        if bad is not None or not (1 <= cal.n_inputs <= 10**12 and 1 <= cal.n_mutations <= 10**12):
            what = f"{bad} = {rates[bad]:g} is not a rate in [0, 1]" if bad else "it counts no inputs or mutations"
            raise DataError(f"{p} is a damaged calibration file ({what})",
                            "calibrate again with 'advaudit detect calibrate'")
        return cal

    def check_for(self, model: Model, mutation: Mutation | None = None) -> None:
        """Refuse to use this calibration for another model or other mutation settings."""
        if model.sha256 != self.model_sha256:
            raise UsageError(
                f"the calibration was made for another model ({Path(self.model_path).name}, "
                f"sha256 {self.model_sha256[:12]}...)",
                "calibrate this model with 'advaudit detect calibrate'",
            )
        mine = (self.mutation.operator, self.mutation.radii)
        if mutation is not None and mutation.operator != "auto" and (mutation.operator, mutation.radii) != mine:
            raise UsageError(
                f"the calibration used --mutation {self.mutation.operator} --radius {self.mutation.radius_text}, "
                f"not {mutation.operator} {mutation.radius_text}",
                "detect with the calibrated settings or calibrate again",
            )

    def summary(self) -> str:
        """The line ``advaudit detect calibrate`` prints."""
        return (f"kappa_nor = {self.kappa_nor:.4f} (mean {self.lcr_mean:.4f} + margin {self.margin:.4f}; "
                f"{self.n_inputs} inputs x {self.n_mutations} {self.mutation.operator} mutations, "
                f"radius {self.mutation.radius_text})")


def calibrate(
    model: Model,
    x: Rows,
    y: np.ndarray,
    mutation: Mutation | None = None,
    *,
    n_mutations: int = N_MUTATIONS,
    seed: int = 0,
    mutants: int = 50,
    shard: Shard | None = None,
    units: ChunkUnits | None = None,
) -> Calibration:
    """Estimate kappa_nor = mean LCR of correctly classified inputs + one-sided 99% margin.

    The margin is z_0.99 * std / sqrt(n), but kappa_nor is never below 1 - 0.01^(1/N), the 99% upper
    bound on the label change rate when none of the N = n * n_mutations mutations changed a label.
    ``units``: see :func:`label_change_rates` (stage ``calibrate``)."""
    mutation = (mutation or Mutation()).check().resolve(x)
    correct = model.predict(x).labels == y
    if correct.sum() < 10:
        raise DataError(f"only {int(correct.sum())} inputs are classified correctly; calibration needs at least 10")
    if mutation.kind == "model":
        seeds = select_mutants(model, np.asarray(x), y, mutation.operator, mutation.radii[0], mutants, seed)
        mutation = Mutation(mutation.operator, mutation.radius, tuple(seeds))
        n_mutations = len(seeds)
    lcr = label_change_rates(
        model, take_rows(x, correct), mutation, n_mutations, seed, shard=shard, units=units, stage="calibrate"
    )
    mean, std = float(lcr.mean()), float(lcr.std(ddof=1))
    # never below the exact one-sided 99% upper bound on a rate of which N draws showed no label
    # change (with a small kappa_nor and few inputs, a calibration can see none: 0 would be no test)
    floor = 1.0 - 0.01 ** (1.0 / (len(lcr) * n_mutations))
    margin = max(Z_99 * std / math.sqrt(len(lcr)), floor - mean)
    return Calibration(
        kappa_nor=mean + margin, lcr_mean=mean, lcr_std=std, margin=margin, n_inputs=int(len(lcr)),
        n_mutations=n_mutations, mutation=mutation, model_sha256=model.sha256, model_path=str(model.path),
        seed=seed,
    )


@dataclass(frozen=True, kw_only=True)
class LCRDetector(Detector):
    """Label Change Rate with a sequential probability ratio test (nMutant, Wang et al. 2018).

    Paper: "Detecting Adversarial Samples of Deep Neural Networks through Mutation Testing",
    https://arxiv.org/abs/1805.05010.  ``mutation``, ``radius`` and ``n_mutations`` set how
    :meth:`calibrate` and :meth:`score` mutate; ``alpha``, ``beta``, ``mu``, ``sigma`` (None:
    min(0.05, 0.8 mu kappa_nor)) and ``max_mutations`` the test :meth:`decide` runs.  The detect jobs'
    options classes take their LCR defaults from these fields (set from :mod:`~advaudit.detect.sprt`
    and :mod:`~advaudit.detect.mutation`), so each default is written down once."""

    name: ClassVar[str] = "lcr"

    mutation: str = DEFAULT_MUTATION
    radius: str | float | tuple[float, ...] | None = None
    n_mutations: int = N_MUTATIONS
    alpha: float = ALPHA
    beta: float = BETA
    mu: float = MU
    sigma: float | None = None
    max_mutations: int = MAX_MUTATIONS

    def parsed_mutation(self) -> Mutation:
        """``mutation`` and ``radius`` as a checked :class:`Mutation` (a one-line error if invalid)."""
        return Mutation.parse(self.mutation, self.radius).check()

    def calibrate(self, model: Model, x: Rows, y: np.ndarray | None, *, seed: int = 0,
                  shard: Shard | None = None) -> Calibration:
        """kappa_nor of the correctly classified inputs of ``x`` (:func:`calibrate`; labels needed)."""
        if y is None:
            raise DataError("LCR calibration needs labelled clean data")
        return calibrate(model, x, y, self.parsed_mutation(), n_mutations=self.n_mutations, seed=seed, shard=shard)

    def score(self, model: Model, calibration: Calibration, x: Rows, *, seed: int = 0,
              shard: Shard | None = None) -> np.ndarray:
        """The LCR of each input under the calibrated mutation, from ``n_mutations`` mutations."""
        return label_change_rates(model, x, calibration.mutation, self.n_mutations, seed, shard=shard)

    def sprt(self, model: Model, calibration: Calibration, *, seed: int = 0) -> SPRTDetector:
        """The decision loop with this detector's test settings."""
        return SPRTDetector(model, calibration, alpha=self.alpha, beta=self.beta, mu=self.mu, sigma=self.sigma,
                            max_mutations=self.max_mutations, seed=seed)

    def decide(self, model: Model, calibration: Calibration, x: Rows, *, seed: int = 0,
               shard: Shard | None = None) -> Decisions:
        """The SPRT verdict of each input (score: the LCR of the mutations it drew)."""
        return self.sprt(model, calibration, seed=seed)(x, shard=shard).decisions()

    @classmethod
    def load_calibration(cls, d: dict[str, Any], path: Path) -> Calibration:
        """An LCR calibration document (files without ``method`` are read here)."""
        return Calibration.from_document(d, path)

    def report_sections(self, calibration: Calibration, calibration_path: str) -> dict[str, Any]:
        """The ``calibration`` and ``sprt`` sections of a detect report (no ``method``: LCR reports
        keep the layout they had before detectors had a contract)."""
        test = sprt_test(calibration.kappa_nor, alpha=self.alpha, beta=self.beta, mu=self.mu, sigma=self.sigma)
        return {
            "calibration": {"path": calibration_path, "kappa_nor": calibration.kappa_nor,
                            "mutation": calibration.mutation.settings()},
            "sprt": {"alpha": test.alpha, "beta": test.beta, "mu": test.mu, "sigma": test.sigma},
        }

    def input_rows(self, decisions: Decisions, indices: np.ndarray) -> list[dict[str, Any]]:
        """index, verdict, label, LCR, mutations drawn and error bound of each input."""
        x = decisions.extra
        return [
            {"index": int(i), "verdict": str(v), "label": int(lab), "lcr": float(r), "mutations": int(m),
             "error_bound": None if np.isnan(e) else float(e)}
            for i, v, lab, r, m, e in zip(indices, decisions.verdict, decisions.labels, x["lcr"], x["mutations"],
                                          x["error_bound"], strict=False)
        ]
