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

from ..checkpoint import ChunkUnits, cached_map, chunk_key
from ..data.batching import default_batch_size
from ..data.views import take_rows
from ..distributed import Shard
from ..errors import DataError, UsageError
from ..models import Model
from ..report.writer import write_json
from .model_mutation import OPERATORS as MODEL_OPERATORS
from .model_mutation import mutant_labels, select_mutants
from .mutations import MUTATORS, chain
from .sprt import ADVERSARIAL, NORMAL, SPRT, UNDECIDED, sprt_round

CALIBRATION_SCHEMA = "advaudit.calibration/1"
Z_99 = 2.3263478740408408  # one-sided 99% normal quantile
DEFAULT_MUTATION = "auto"
DEFAULT_RADII: dict[str, float] = {
    "gaussian": 0.1, "uniform": 0.3, "pixel": 0.05, "patch": 0.5, "brightness": 0.5, "darken": 0.5,
}
"""Radius of each input operator when ``--radius`` is not given (model operators: :data:`DEFAULT_RATE`)."""
DEFAULT_RATE = 0.01
AUTO: dict[str, tuple[str, tuple[float, ...]]] = {
    "grayscale": ("darken+pixel", (0.5, 0.05)),
    "colour": ("brightness", (0.5,)),
}
"""What ``--mutation auto`` (the default) becomes, by the inputs' channel count.

* One channel: ``darken+pixel`` (0.5, 0.05), chosen on MNIST test images 9000-9599, held out from
  every benchmark set: 300 normal images against FGSM / JSMA / C&W / BB examples crafted from another
  300 (300 mutations per input).  Mean AUROC over the four attacks: darken+pixel 0.9806, 0.4/0.05
  0.9792, 0.5/0.03 0.9782, 0.6/0.03 0.9767, 0.5/0.08 0.9717; brightness 0.5 0.9756; pixel 0.05 alone
  is strong on JSMA only, darkening alone on the dense attacks only.
* Colour: ``brightness`` 0.5.  Random pixel resets break a CIFAR-10 ResNet's prediction on clean images
  (kappa_nor 0.57 with darken+pixel, AUROC 0.73 on the CIFAR-10 benchmark, against 0.90 with
  brightness)."""
MAX_BATCH_IMAGES = 8192
QUERY_BATCH = 1024
LARGE_INPUT_VALUES = 32768
"""Inputs above this many values (3x104x104) get fewer mutated images per chunk (ImageNet scale)."""
MUTATION_VALUES = 2**25
"""Input values per chunk of mutated images for large inputs (128 MiB of float32)."""


def mutation_budget(input_shape: tuple[int, ...]) -> int:
    """Mutated images built per chunk: :data:`MAX_BATCH_IMAGES` up to CIFAR/GTSRB-sized inputs (so
    their random draws are unchanged), fewer for large inputs so memory stays bounded (222 at 224x224)."""
    values = int(np.prod(input_shape))
    return MAX_BATCH_IMAGES if values <= LARGE_INPUT_VALUES else max(1, MUTATION_VALUES // values)
"""Mutations per model call: 1024 runs the sample MNIST model about 15% faster per image than 8192
(0.042 against 0.050 ms on 2 cores, ONNX Runtime), the larger batch falling out of cache."""
CHUNK = 128
"""Inputs per independently seeded chunk (the unit of sharding)."""
SIGMA_FRACTION = 0.8
"""Default --sigma as a fraction of mu * kappa_nor (at most 0.05): p0 = 0.2 mu kappa_nor, p1 = 1.8 mu
kappa_nor.  On held-out MNIST images 9000-9599 (the set that chose the mutation) fractions 0.5 / 0.65 /
0.8 / 0.9 gave SPRT accuracy 0.944 / 0.943 / 0.942 / 0.945 with 51.1 / 37.7 / 28.8 / 25.0 mutations per
input: the accuracy does not move, the cost falls by almost half from 0.5 to 0.8."""
FIRST_ROUND = 8
"""Mutations per input in the detector's first round (fewer if the test can decide "normal" sooner)."""


def chunk_seed(seed: int, start: int) -> int:
    """Seed of the chunk starting at input ``start``: ``seed`` for the first chunk (inputs sets of
    up to :data:`CHUNK` draw exactly as a single generator would), a hash of both for the others."""
    return seed if start == 0 else zlib.crc32(f"{seed}/lcr/{start}".encode()) & 0x7FFFFFFF


def chunk_starts(n: int, chunk: int = CHUNK) -> list[int]:
    return list(range(0, n, chunk))


@dataclass(frozen=True)
class Mutation:
    """How inputs are mutated: input operators with their radii, or model mutants (operator, rate).

    ``operator`` is one operator or a chain joined by ``+`` (``darken+pixel``: every mutation is
    darkened, then has random pixels reset); ``radius`` is given as a float or one float per operator
    in the chain, and kept as a tuple (:attr:`radii`).  ``auto`` (the default) picks by the inputs'
    channel count (:data:`AUTO`) when the mutation meets data (:meth:`resolve`).  Use :meth:`parse`
    for user-given text."""

    operator: str = DEFAULT_MUTATION
    radius: float | tuple[float, ...] | None = None
    mutants: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # one form inside: a tuple with one float per operator (empty for ``auto``)
        r = self.radius
        object.__setattr__(self, "radius", () if r is None else tuple(float(v) for v in r) if isinstance(r, (tuple, list)) else (float(r),))

    @classmethod
    def parse(cls, operator: str, radius: Any = None, mutants: tuple[int, ...] = ()) -> Mutation:
        """From CLI / config / calibration values: ``radius`` may be None (each operator's default),
        a number, a list, or text such as ``"0.5,0.05"``."""
        ops = [o.strip() for o in str(operator).split("+")]
        if ops == ["auto"]:
            if radius is not None and radius != "":
                raise UsageError("--radius goes with an explicit --mutation", "name the operators, e.g. --mutation darken+pixel --radius 0.5,0.05")
            return cls("auto", None, tuple(mutants))
        if radius is None or radius == "":
            radii = tuple(DEFAULT_RATE if o in MODEL_OPERATORS else DEFAULT_RADII.get(o, 0.0) for o in ops)
        else:
            items = radius.split(",") if isinstance(radius, str) else (radius if isinstance(radius, (list, tuple)) else [radius])
            try:
                radii = tuple(float(r) for r in items)
            except (TypeError, ValueError):
                raise UsageError(f"--radius must be a number or comma-separated numbers, got {radius!r}") from None
        return cls("+".join(ops), radii, tuple(mutants))

    def resolve(self, x: np.ndarray) -> Mutation:
        """The concrete mutation for inputs ``x`` (canonical NCHW): ``auto`` by channel count."""
        if self.operator != "auto":
            return self
        operator, radii = AUTO["grayscale" if x.ndim == 4 and x.shape[1] == 1 else "colour"]
        return Mutation(operator, radii, self.mutants)

    @property
    def radii(self) -> tuple[float, ...]:
        assert isinstance(self.radius, tuple)  # normalised in __post_init__
        return self.radius

    @property
    def steps(self) -> list[tuple[str, float]]:
        """The chain as ``(operator, radius)`` pairs, applied in order."""
        return list(zip(self.operator.split("+"), self.radii))

    @property
    def radius_text(self) -> str:
        return ",".join(f"{r:g}" for r in self.radii)

    @property
    def kind(self) -> str:
        return "model" if self.operator in MODEL_OPERATORS else "input"

    def check(self) -> Mutation:
        if self.operator == "auto":
            return self
        ops = self.operator.split("+")
        if not (len(ops) == 1 and ops[0] in MODEL_OPERATORS):
            bad = [o for o in ops if o not in MUTATORS]
            if bad:
                hint = f"choose input operators ({', '.join(MUTATORS)}), chained with '+', or one model operator ({', '.join(MODEL_OPERATORS)})"
                raise UsageError(f"unknown mutation {bad[0]!r} in --mutation {self.operator}", hint)
        if len(self.radii) != len(ops):
            raise UsageError(
                f"--radius needs one value per operator of --mutation {self.operator} ({len(ops)}), got {self.radius_text}",
                f"for example --radius {','.join(f'{DEFAULT_RADII.get(o, DEFAULT_RATE):g}' for o in ops)}",
            )
        for r in self.radii:
            if not 0 < r <= 1:
                raise UsageError(f"--radius must be in (0, 1] (a fraction of the value range or a rate), got {r:g}")
        return self

    def settings(self) -> dict[str, Any]:
        radius = None if not self.radii else self.radii[0] if len(self.radii) == 1 else list(self.radii)
        return {"operator": self.operator, "radius": radius, "kind": self.kind}


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
        from ..safeio import parse_json, read_text

        p = Path(path)
        text = read_text(p, "calibration file", max_bytes=16 * 2**20,
                         missing=(f"calibration file not found: {p}", "make one with 'advaudit detect calibrate'"))
        try:
            d = parse_json(text, f"calibration file {p}")
        except json.JSONDecodeError as exc:
            raise DataError(f"{p} is not a calibration file ({str(exc).splitlines()[0]})") from None
        if not isinstance(d, dict) or d.get("schema") != CALIBRATION_SCHEMA:
            raise DataError(f"{p} is not an advaudit calibration ({CALIBRATION_SCHEMA})")
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
            field_name = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
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
                f"the calibration was made for another model ({Path(self.model_path).name}, sha256 {self.model_sha256[:12]}...)",
                "calibrate this model with 'advaudit detect calibrate'",
            )
        if mutation is not None and mutation.operator != "auto" and (mutation.operator, mutation.radii) != (self.mutation.operator, self.mutation.radii):
            raise UsageError(
                f"the calibration used --mutation {self.mutation.operator} --radius {self.mutation.radius_text}, "
                f"not {mutation.operator} {mutation.radius_text}",
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
                mutant_labels(self.model, x, self.mutation.operator, self.mutation.radii[0], seeds[(offset + j) % len(seeds)])
                for j in range(k)
            ]
            return np.stack(cols, axis=1) != labels[:, None]
        out = np.empty((len(x), k), dtype=bool)
        per = max(1, mutation_budget(x.shape[1:]) // k)
        steps = self.mutation.steps
        for i in range(0, len(x), per):
            xt = torch.from_numpy(x[i : i + per])
            xm = chain(steps, xt, k, self.lo, self.hi, self.gen)
            pred = self.model.query(xm.numpy(), batch_size=default_batch_size(x.shape[1:], QUERY_BATCH)).labels
            out[i : i + per] = pred.reshape(-1, k) != labels[i : i + per, None]
        return out


def label_change_rates(
    model: Model, x: np.ndarray, mutation: Mutation, n_mutations: int = 200, seed: int = 0,
    *, shard: Shard | None = None, units: ChunkUnits | None = None, stage: str = "lcr",
) -> np.ndarray:
    """LCR of each input estimated from ``n_mutations`` mutations (no early stopping).

    Computed per chunk of :data:`CHUNK` inputs; ``shard`` spreads the chunks over processes;
    ``units`` keeps finished chunks (keyed by ``stage`` and the chunk's start) and reuses saved ones."""
    starts = chunk_starts(len(x))
    parts = cached_map(
        shard or Shard.single(),
        lambda s: lcr_chunk(model, x[s : s + CHUNK], mutation, n_mutations, chunk_seed(seed, s)),
        starts, [chunk_key(stage, s) for s in starts], units,
    )
    return np.concatenate(parts) if parts else np.zeros(0)


def lcr_chunk(model: Model, x: np.ndarray, mutation: Mutation, n_mutations: int, seed: int) -> np.ndarray:
    """LCR of one chunk of inputs, its mutations drawn from a generator seeded with ``seed``."""
    mutation = mutation.resolve(x)
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
            sigma = min(0.05, SIGMA_FRACTION * mu * calibration.kappa_nor) or 1e-9
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
        # short first rounds decide most adversarial inputs (a few label changes suffice); the count
        # doubles each round, but stops once at the count where an input without label changes is
        # accepted as normal (most inputs are), so a normal input costs no mutation beyond it
        done, k = 0, min(FIRST_ROUND, self.test.min_normal)
        while len(active) and done < self.max_mutations:
            k = min(k, self.max_mutations - done)
            changes = sampler.changes(x[active], labels[active], k, done)
            dec, n_at, c_at = sprt_round(self.test, changes, changed[active], used[active])
            decision[active], used[active], changed[active] = dec, n_at, c_at
            active = active[dec == UNDECIDED]
            done += k
            k = min(done, self.test.min_normal - done) if done < self.test.min_normal else done
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
