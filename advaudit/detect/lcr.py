"""Label Change Rate (LCR) detection of adversarial inputs (nMutant, paper 002).

The LCR of an input is the fraction of its random mutations that the model labels differently from
the input itself.  Adversarial inputs sit near a decision boundary and have a far higher LCR than
normal ones (kappa_adv >> kappa_nor, paper Table 3).

* :func:`calibrate` estimates kappa_nor on correctly classified clean inputs (mean plus a one-sided
  99% confidence margin) and records the mutation settings and the model's sha256;
* :class:`LCRDetector` runs the sequential probability ratio test of Algorithm 1 for many inputs at
  once: each round mutates every undecided input several times, classifies all mutations in one
  batched call, and stops each input at the first mutation where its test decides.

Randomness is drawn per *chunk* of :data:`CHUNK` consecutive inputs, from a generator seeded by the
seed and the chunk's first index (:func:`chunk_seed`; the first chunk uses the seed itself), so a
sharded run (:class:`~advaudit.distributed.Shard`, each process a share of the chunks) gives exactly
the figures of a single process.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..distributed import Shard
from ..errors import DataError, UsageError
from ..models import Model
from ..report.writer import write_json
from .model_mutation import OPERATORS as MODEL_OPERATORS
from .model_mutation import mutant_labels, select_mutants
from .mutations import MUTATORS
from .sprt import ADVERSARIAL, NORMAL, SPRT, UNDECIDED, sprt_round

CALIBRATION_SCHEMA = "advaudit.calibration/1"
Z_99 = 2.3263478740408408  # one-sided 99% normal quantile
DEFAULT_MUTATION = "brightness"
DEFAULT_RADIUS = 0.5
"""Chosen on MNIST images 9000-9399 (held out from every benchmark set), FGSM/C&W/JSMA/BB adversarials:
brightness radii 0.25/0.35/0.5/0.6/0.75 gave mean AUROC 0.952/0.979/0.983/0.983/0.981; 0.5 and 0.6 tie
and 0.5 makes fewer label changes on normal inputs (kappa_nor about 0.07-0.10 on the sample MNIST
model, near the paper's regime), so the SPRT needs fewer mutations."""
DEFAULT_RATE = 0.01
MAX_BATCH_IMAGES = 8192
CHUNK = 128
"""Inputs per independently seeded chunk (the unit of sharding)."""


def chunk_seed(seed: int, start: int) -> int:
    """Seed of the chunk starting at input ``start``: ``seed`` for the first chunk (inputs sets of
    up to :data:`CHUNK` draw exactly as a single generator would), a hash of both for the others."""
    return seed if start == 0 else zlib.crc32(f"{seed}/lcr/{start}".encode()) & 0x7FFFFFFF


def chunk_starts(n: int, chunk: int = CHUNK) -> list[int]:
    return list(range(0, n, chunk))


@dataclass(frozen=True)
class Mutation:
    """How inputs are mutated: an input operator with a radius, or model mutants (operator, rate)."""

    operator: str = DEFAULT_MUTATION
    radius: float = DEFAULT_RADIUS
    mutants: tuple[int, ...] = ()

    @property
    def kind(self) -> str:
        return "model" if self.operator in MODEL_OPERATORS else "input"

    def check(self) -> Mutation:
        if self.operator not in MUTATORS and self.operator not in MODEL_OPERATORS:
            choices = ", ".join([*MUTATORS, *MODEL_OPERATORS])
            raise UsageError(f"unknown mutation {self.operator!r}", f"choose one of {choices}")
        if not 0 < self.radius <= 1:
            raise UsageError(f"--radius must be in (0, 1] (a fraction of the value range or a rate), got {self.radius:g}")
        return self

    def settings(self) -> dict[str, Any]:
        return {"operator": self.operator, "radius": self.radius, "kind": self.kind}


@dataclass
class Calibration:
    """kappa_nor and everything needed to check that a detector uses it as calibrated."""

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
        d = asdict(self)
        d["mutation"] = {**self.mutation.settings(), "mutants": list(self.mutation.mutants)}
        return d

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise DataError(f"calibration file not found: {p}", "make one with 'advaudit detect calibrate'") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{p} is not a calibration file ({str(exc).splitlines()[0]})") from None
        if not isinstance(d, dict) or d.get("schema") != CALIBRATION_SCHEMA:
            raise DataError(f"{p} is not an advaudit calibration ({CALIBRATION_SCHEMA})")
        try:
            m = d["mutation"]
            mutation = Mutation(m["operator"], float(m["radius"]), tuple(int(s) for s in m.get("mutants", ())))
            return cls(
                kappa_nor=float(d["kappa_nor"]), lcr_mean=float(d["lcr_mean"]), lcr_std=float(d["lcr_std"]),
                margin=float(d["margin"]), n_inputs=int(d["n_inputs"]), n_mutations=int(d["n_mutations"]),
                mutation=mutation.check(), model_sha256=str(d["model_sha256"]), model_path=str(d["model_path"]),
                seed=int(d["seed"]), extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{p} is a damaged calibration file (field {exc})") from None

    def check_for(self, model: Model, mutation: Mutation | None = None) -> None:
        """Refuse to use this calibration for another model or other mutation settings."""
        if model.sha256 != self.model_sha256:
            raise UsageError(
                f"the calibration was made for another model ({Path(self.model_path).name}, sha256 {self.model_sha256[:12]}...)",
                "calibrate this model with 'advaudit detect calibrate'",
            )
        if mutation is not None and (mutation.operator, mutation.radius) != (self.mutation.operator, self.mutation.radius):
            raise UsageError(
                f"the calibration used --mutation {self.mutation.operator} --radius {self.mutation.radius:g}, "
                f"not {mutation.operator} {mutation.radius:g}",
                "detect with the calibrated settings or calibrate again",
            )


class _Sampler:
    """Draws mutations for a set of inputs and tells which ones change the label."""

    def __init__(self, model: Model, mutation: Mutation, seed: int) -> None:
        self.model, self.mutation = model, mutation
        self.gen = torch.Generator().manual_seed(seed)
        self.lo, self.hi = model.spec.range

    def changes(self, x: np.ndarray, labels: np.ndarray, k: int, offset: int) -> np.ndarray:
        """(len(x), k) bools: mutation j of input i changes its label.  ``offset`` = mutations so far."""
        if self.mutation.kind == "model":
            seeds = self.mutation.mutants
            cols = [
                mutant_labels(self.model, x, self.mutation.operator, self.mutation.radius, seeds[(offset + j) % len(seeds)])
                for j in range(k)
            ]
            return np.stack(cols, axis=1) != labels[:, None]
        out = np.empty((len(x), k), dtype=bool)
        per = max(1, MAX_BATCH_IMAGES // k)
        op = MUTATORS[self.mutation.operator]
        for i in range(0, len(x), per):
            xt = torch.from_numpy(x[i : i + per])
            xm = op(xt, k, self.mutation.radius, self.lo, self.hi, self.gen)
            pred = self.model.query(xm.numpy(), batch_size=MAX_BATCH_IMAGES).labels
            out[i : i + per] = pred.reshape(-1, k) != labels[i : i + per, None]
        return out


def label_change_rates(
    model: Model, x: np.ndarray, mutation: Mutation, n_mutations: int = 200, seed: int = 0,
    *, shard: Shard | None = None,
) -> np.ndarray:
    """LCR of each input estimated from ``n_mutations`` mutations (no early stopping).

    Computed per chunk of :data:`CHUNK` inputs; ``shard`` spreads the chunks over processes."""
    parts = (shard or Shard.single()).map(
        lambda s: lcr_chunk(model, x[s : s + CHUNK], mutation, n_mutations, chunk_seed(seed, s)), chunk_starts(len(x))
    )
    return np.concatenate(parts) if parts else np.zeros(0)


def lcr_chunk(model: Model, x: np.ndarray, mutation: Mutation, n_mutations: int, seed: int) -> np.ndarray:
    """LCR of one chunk of inputs, its mutations drawn from a generator seeded with ``seed``."""
    labels = model.query(x).labels
    return _Sampler(model, mutation, seed).changes(x, labels, n_mutations, 0).mean(axis=1)


def calibrate(
    model: Model,
    x: np.ndarray,
    y: np.ndarray,
    mutation: Mutation | None = None,
    *,
    n_mutations: int = 200,
    seed: int = 0,
    mutants: int = 50,
    shard: Shard | None = None,
) -> Calibration:
    """Estimate kappa_nor = mean LCR of correctly classified inputs + one-sided 99% margin."""
    mutation = (mutation or Mutation()).check()
    correct = model.predict(x).labels == y
    if correct.sum() < 10:
        raise DataError(f"only {int(correct.sum())} inputs are classified correctly; calibration needs at least 10")
    if mutation.kind == "model":
        seeds = select_mutants(model, x, y, mutation.operator, mutation.radius, mutants, seed)
        mutation = Mutation(mutation.operator, mutation.radius, tuple(seeds))
        n_mutations = len(seeds)
    lcr = label_change_rates(model, x[correct], mutation, n_mutations, seed, shard=shard)
    mean, std = float(lcr.mean()), float(lcr.std(ddof=1))
    margin = Z_99 * std / math.sqrt(len(lcr))
    return Calibration(
        kappa_nor=mean + margin, lcr_mean=mean, lcr_std=std, margin=margin, n_inputs=int(len(lcr)),
        n_mutations=n_mutations, mutation=mutation, model_sha256=model.sha256, model_path=str(model.path), seed=seed,
    )


@dataclass
class Detections:
    """Per-input results of :class:`LCRDetector` (arrays of length N) and the totals."""

    decision: np.ndarray
    labels: np.ndarray
    mutations: np.ndarray
    changes: np.ndarray
    time_s: float
    alpha: float
    beta: float

    @property
    def verdict(self) -> np.ndarray:
        names = np.array(["undecided", "normal", "adversarial"])
        return names[self.decision + 1]

    @property
    def lcr(self) -> np.ndarray:
        return self.changes / np.maximum(self.mutations, 1)

    @property
    def error_bound(self) -> np.ndarray:
        """beta for an 'adversarial' verdict, alpha for 'normal', NaN when undecided."""
        return np.where(self.decision == ADVERSARIAL, self.beta, np.where(self.decision == NORMAL, self.alpha, np.nan))

    def totals(self) -> dict[str, Any]:
        n = len(self.decision)
        return {
            "n": n,
            "adversarial": int((self.decision == ADVERSARIAL).sum()),
            "normal": int((self.decision == NORMAL).sum()),
            "undecided": int((self.decision == UNDECIDED).sum()),
            "mean_mutations": float(self.mutations.mean()) if n else 0.0,
            "time_s": self.time_s,
            "ms_per_input": 1000 * self.time_s / max(n, 1),
        }


class LCRDetector:
    """Label Change Rate with a sequential probability ratio test (nMutant, Wang et al. 2018).

    Paper: "Detecting Adversarial Samples of Deep Neural Networks through Mutation Testing",
    https://arxiv.org/abs/1805.05010.  Build it from a model and its :class:`Calibration`, call it on
    a batch of canonical inputs; it returns :class:`Detections`.
    """

    kind = "detector"
    name = "lcr"

    def __init__(
        self,
        model: Model,
        calibration: Calibration,
        *,
        alpha: float = 0.05,
        beta: float = 0.05,
        mu: float = 1.2,
        sigma: float | None = None,
        max_mutations: int = 500,
        seed: int = 0,
    ) -> None:
        calibration.check_for(model)
        if max_mutations < 1:
            raise UsageError(f"--max-mutations must be positive, got {max_mutations}")
        if sigma is None:
            sigma = min(0.05, 0.5 * mu * calibration.kappa_nor) or 1e-9
        self.model, self.calibration = model, calibration
        self.test = SPRT(calibration.kappa_nor, mu, sigma, alpha, beta).check()
        self.max_mutations, self.seed = max_mutations, seed

    def __call__(self, x: np.ndarray, *, shard: Shard | None = None) -> Detections:
        """Decide every input of ``x``, chunk by chunk (``shard`` spreads the chunks)."""
        parts = (shard or Shard.single()).map(lambda s: self.chunk(x[s : s + CHUNK], s), chunk_starts(len(x)))
        return self.join(parts)

    def join(self, parts: list[Detections]) -> Detections:
        """Detections of consecutive chunks as one (time: the sum of the chunks' times)."""
        if not parts:
            e = np.zeros(0, dtype=np.int64)
            return Detections(e.copy(), e.copy(), e.copy(), e.copy(), 0.0, self.test.alpha, self.test.beta)
        cat = lambda f: np.concatenate([getattr(p, f) for p in parts])  # noqa: E731
        return Detections(
            cat("decision"), cat("labels"), cat("mutations"), cat("changes"), float(sum(p.time_s for p in parts)),
            self.test.alpha, self.test.beta,
        )

    def chunk(self, x: np.ndarray, start: int = 0) -> Detections:
        """Decide the inputs of one chunk, the one beginning at input ``start`` (it picks the seed)."""
        start_time = time.perf_counter()
        n = len(x)
        labels = self.model.query(x).labels
        decision = np.full(n, UNDECIDED)
        used = np.zeros(n, dtype=np.int64)
        changed = np.zeros(n, dtype=np.int64)
        sampler = _Sampler(self.model, self.calibration.mutation, chunk_seed(self.seed, start))
        active = np.arange(n)
        # first round: just enough mutations for an input without label changes to be accepted as
        # normal (most inputs are); then rounds double for the inputs still undecided
        done, k = 0, max(8, self.test.min_normal)
        while len(active) and done < self.max_mutations:
            k = min(k, self.max_mutations - done)
            changes = sampler.changes(x[active], labels[active], k, done)
            dec, n_at, c_at = sprt_round(self.test, changes, changed[active], used[active])
            decision[active], used[active], changed[active] = dec, n_at, c_at
            active = active[dec == UNDECIDED]
            done += k
            k *= 2
        return Detections(decision, labels, used, changed, time.perf_counter() - start_time, self.test.alpha, self.test.beta)


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
