"""Run attacks over a data set, verify every example, and aggregate the figures.

:func:`run_attacks` is the Python API behind ``advaudit attack``.  It attacks only the correctly
classified samples, in batches, at every eps; re-checks every candidate in the deployment runtime
(:mod:`.verify`); keeps, per sample and eps, whether *any* attack fooled it (the per-sample worst
case); and, for a cascade suite, runs each attack only on the samples still robust.

Memory follows the batch size, not the data size: ``x`` may be a lazily converted view
(:class:`advaudit.data.views.FloatView`); each batch of candidates is verified as soon as the attack
batches covering it are done, and only per-sample figures are kept in memory.  Adversarial images go
to a temporary file (:mod:`.store`), and only at the eps that ``keep_adversarial`` asks for.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from ..data.views import Rows
from ..distributed import Shard
from ..errors import UsageError
from ..models import Model
from ..models.base import Prediction
from . import get_attack
from .base import Attack
from .criterion import Criterion
from .engine import Progress, attack_batches
from .masking import masking_warnings
from .store import AdversarialImages, ImageSpool
from .streaming import Keep, StreamVerifier, blocks, keep_for, verify_blocks
from .suites import AttackChoice
from .verify import Verified, norms


@dataclass
class AttackUnit:
    """What one attack at one budget produced (all samples): enough to replay it without running it."""

    verified: Verified
    queries: np.ndarray
    rejected: np.ndarray  # fooled the differentiable twin, not the runtime
    time_s: float


class UnitStore(Protocol):
    """Where :func:`run_attacks` keeps finished (attack, eps) units (:class:`advaudit.checkpoint.AttackUnits`)."""

    def load(self, key: str, x: Rows) -> AttackUnit | None:
        """The unit ``key`` of an interrupted run with the same inputs, or None to run it."""

    def save(self, key: str, unit: AttackUnit, x: Rows) -> None:
        """Keep a finished unit."""


@dataclass
class AttackRow:
    """One attack at one eps: the figures of the report's ``results`` list."""

    attack: str
    params: dict[str, Any]
    norm: str
    eps: float
    robust_accuracy: float
    success_rate: float
    verified: int
    attacked: int
    rejected: int
    mean_linf: float | None
    median_linf: float | None
    mean_l2: float | None
    median_l2: float | None
    mean_queries: float
    time_s: float
    cascade: bool
    minimum_norm: bool
    uses_gradients: bool
    loss_clean: float | None = None
    loss_adv: float | None = None


@dataclass
class AttackRun:
    """Everything :func:`run_attacks` measured."""

    n: int
    clean_accuracy: float
    norm: str
    eps: list[float]
    targeted: str | None
    rows: list[AttackRow]
    robust_by_eps: dict[float, float]
    warnings: list[str]
    x: Rows = field(repr=False)  # the inputs as given (an array or a lazily converted view)
    y: np.ndarray = field(repr=False)
    clean_labels: np.ndarray = field(repr=False)
    clean_probs: np.ndarray = field(repr=False)
    # per eps: first verified adversarial (or x), read from a temporary file (``run.adv[e][rows]``)
    adv: dict[float, AdversarialImages] = field(repr=False)
    adv_by: dict[float, np.ndarray] = field(repr=False)  # per eps: index of the attack that found it, -1 none
    adv_labels: dict[float, np.ndarray] = field(repr=False)
    adv_probs: dict[float, np.ndarray] = field(repr=False)

    @property
    def robust_accuracy(self) -> float:
        """Per-sample worst case over all attacks at the largest eps."""
        return self.robust_by_eps[max(self.eps)]

    def results(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows]


def choose_targets(
    mode: str | None, y: np.ndarray, clean_log_probs: np.ndarray, num_classes: int, seed: int
) -> np.ndarray | None:
    """Targets for ``--target least-likely|random|LABEL`` (None when untargeted)."""
    if mode is None:
        return None
    if mode == "least-likely":
        return clean_log_probs.argmin(axis=1).astype(np.int64)
    if mode == "random":
        rng = np.random.default_rng(seed)
        shift = rng.integers(1, num_classes, size=len(y))
        return ((y + shift) % num_classes).astype(np.int64)
    try:
        label = int(mode)
    except ValueError:
        raise UsageError(f"--target must be least-likely, random or a label, got {mode!r}") from None
    if not 0 <= label < num_classes:
        raise UsageError(f"--target {label} is not a class of this model (0..{num_classes - 1})")
    return np.full(len(y), label, dtype=np.int64)


def build_attacks(choices: list[AttackChoice], model: Model, norm: str, targeted: bool) -> list[Attack]:
    """Instantiate and check every attack before anything runs (bad input fails fast)."""
    attacks = [get_attack(c.name, **c.params) for c in choices]
    for a in attacks:
        if a.uses_gradients and not model.has_gradients:
            usable = ", ".join(sorted({"square", "substitute"}))
            raise UsageError(
                f"attack {a.name!r} needs gradients, but {model.path.name} has none ({model.gradients.note})",
                f"attacks it can use: {usable}",
            )
        if not a.minimum_norm and norm not in a.norms:
            raise UsageError(f"attack {a.name!r} supports --norm {'/'.join(a.norms)}, not {norm}")
        if targeted and not a.supports_targeted:
            raise UsageError(f"attack {a.name!r} has no targeted mode")
    return attacks


def check_eps(model: Model, eps: list[float], norm: str) -> list[float]:
    """Sorted unique budgets; each must be positive and fit the value range."""
    lo, hi = model.spec.range
    assert model.input_shape is not None
    largest = (hi - lo) * (1.0 if norm == "linf" else float(np.sqrt(np.prod(model.input_shape))))
    out = sorted(set(float(e) for e in eps))
    for e in out:
        if not 0 < e <= largest:
            raise UsageError(
                f"eps {e:g} is outside the value range {lo:g}..{hi:g} for --norm {norm}",
                f"use 0 < eps <= {largest:g}",
            )
    return out


def default_eps(model: Model, norm: str) -> float:
    """The default budget: 8/255 of the value range (Linf) or half of it (L2)."""
    lo, hi = model.spec.range
    return (8 / 255 if norm == "linf" else 0.5) * (hi - lo)


def resolve_eps(model: Model, eps: list[float] | None, norm: str) -> list[float]:
    """The budgets to attack at (:func:`check_eps`); :func:`default_eps` when none are given."""
    return check_eps(model, [float(e) for e in eps] if eps else [default_eps(model, norm)], norm)


def _summary(values: np.ndarray) -> tuple[float | None, float | None]:
    if len(values) == 0:
        return None, None
    return float(values.mean()), float(np.median(values))


def _ce(log_probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -log_probs[np.arange(len(y)), y]


KEEP_ADVERSARIAL = ("all", "largest", "none")
"""``run_attacks(keep_adversarial=)``: the eps at which adversarial images are kept (on disk)."""


def run_attacks(
    model: Model,
    x: Rows,
    y: np.ndarray,
    choices: list[AttackChoice],
    eps: list[float],
    *,
    norm: str = "linf",
    cascade: bool = False,
    target: str | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress | None = None,
    shard: Shard | None = None,
    units: UnitStore | None = None,
    keep_adversarial: str = "all",
) -> AttackRun:
    """Attack ``x`` (canonical, model-ready) with every choice at every eps; see module docstring.

    ``shard``: this process's share of a sharded run (default: one process); every rank must call
    with the same arguments, and every rank returns the same :class:`AttackRun`.

    ``units``: finished (attack, eps) units are saved there and, when it has them, reused instead of
    run again; a cascade replays them in order, so the result equals an uninterrupted run's.

    ``x`` may be an array or a lazy view of one (:mod:`advaudit.data.views`): it is read a batch at a
    time.  ``keep_adversarial``: where :attr:`AttackRun.adv` keeps the verified adversarial images
    (in a temporary file): ``all`` eps, the ``largest`` (what ``--save-adv`` and ``--examples`` use) or
    ``none``; the figures do not depend on it."""
    if keep_adversarial not in KEEP_ADVERSARIAL:
        raise ValueError(f"keep_adversarial must be one of {', '.join(KEEP_ADVERSARIAL)}, got {keep_adversarial!r}")
    shard = shard or Shard.single()
    eps = check_eps(model, eps, norm)
    attacks = build_attacks(choices, model, norm, target is not None)
    labels, outputs = blocks(
        shard, len(x), batch_size, lambda s, e: _prediction(model.predict(x[s:e], batch_size=batch_size))
    )
    clean = Prediction(labels, outputs, model.output_kind)
    correct = clean.labels == y
    assert model.num_classes is not None
    targets = choose_targets(target, y, clean.log_probs, model.num_classes, seed)
    # Targeted-only attacks (JSMA) in an untargeted run aim at random other classes; any label
    # change still counts as success.
    random_targets = choose_targets("random", y, clean.log_probs, model.num_classes, seed)
    robust = {e: correct.copy() for e in eps}
    kept = [] if keep_adversarial == "none" else eps if keep_adversarial == "all" else [max(eps)]
    spool = ImageSpool(tuple(x.shape[1:])) if kept else None
    adv = {e: AdversarialImages(x, spool, kept=e in kept) for e in eps}
    adv_by = {e: np.full(len(x), -1) for e in eps}
    adv_labels = {e: clean.labels.copy() for e in eps}
    adv_probs = {e: clean.probs.copy() for e in eps}
    rows: list[AttackRow] = []

    for k, (choice, attack) in enumerate(zip(choices, attacks)):
        budgets: list[float | None] = [None] if attack.minimum_norm else list(eps)
        for budget in budgets:
            todo = correct.copy()
            if cascade:
                todo &= robust[budget] if budget is not None else np.logical_or.reduce([robust[e] for e in eps])
            key = f"{k}/{choice.name}/{'all' if budget is None else repr(budget)}"
            unit = units.load(key, x) if units is not None else None
            if unit is None:
                start = time.perf_counter()
                ver, queries, rejected = _attack_all(
                    model, attack, x, y, targets, todo, norm, budget, batch_size, seed, progress, shard,
                    aim=random_targets if targets is None and not attack.supports_untargeted else targets,
                    keep=keep_for(kept, robust, eps, budget, spool),
                )
                unit = AttackUnit(ver, queries, rejected, time.perf_counter() - start)
                if units is not None:
                    units.save(key, unit, x)
            ver, queries, rejected, elapsed = unit.verified, unit.queries, unit.rejected, unit.time_s
            measured = ver.linf if norm == "linf" else ver.l2
            for e in ([budget] if budget is not None else eps):
                ok = ver.success & (measured <= e)
                fresh = ok & robust[e]
                adv[e].take(fresh, ver.x_adv)
                adv_by[e][fresh] = k
                adv_labels[e][fresh], adv_probs[e][fresh] = ver.adv_labels[fresh], np.exp(ver.adv_log_probs[fresh])
                robust[e] &= ~ok
                att = todo.sum()
                rows.append(
                    AttackRow(
                        attack=choice.name,
                        params=dict(attack.params),
                        norm=norm,
                        eps=e,
                        robust_accuracy=float((robust[e] if cascade else correct & ~ok).mean()),
                        success_rate=float(ok.sum() / max(correct.sum(), 1)),
                        verified=int(ok.sum()),
                        attacked=int(att),
                        rejected=int((rejected & ~ver.success).sum()),
                        mean_linf=_summary(ver.linf[ok])[0],
                        median_linf=_summary(ver.linf[ok])[1],
                        mean_l2=_summary(ver.l2[ok])[0],
                        median_l2=_summary(ver.l2[ok])[1],
                        mean_queries=float(queries[todo].mean()) if att else 0.0,
                        time_s=elapsed,
                        cascade=cascade,
                        minimum_norm=attack.minimum_norm,
                        uses_gradients=attack.uses_gradients,
                        loss_clean=float(_ce(clean.log_probs[todo], y[todo]).mean()) if att else None,
                        loss_adv=float(_ce(ver.adv_log_probs[todo], y[todo]).mean()) if att else None,
                    )
                )
    run = AttackRun(
        n=len(x),
        clean_accuracy=float(correct.mean()),
        norm=norm,
        eps=eps,
        targeted=target,
        rows=rows,
        robust_by_eps={e: float(robust[e].mean()) for e in eps},
        warnings=[],
        x=x,
        y=y,
        clean_labels=clean.labels,
        clean_probs=clean.probs,
        adv=adv,
        adv_by=adv_by,
        adv_labels=adv_labels,
        adv_probs=adv_probs,
    )
    run.warnings = masking_warnings(model, run, batch_size=batch_size)
    return run


def _attack_all(
    model: Model,
    attack: Attack,
    x: Rows,
    y: np.ndarray,
    targets: np.ndarray | None,
    todo: np.ndarray,
    norm: str,
    eps: float | None,
    batch_size: int,
    seed: int,
    progress: Progress | None,
    shard: Shard,
    aim: np.ndarray | None = None,
    keep: Keep | None = None,
) -> tuple[Verified, np.ndarray, np.ndarray]:
    """Attack the ``todo`` samples in batches; return verdicts for all samples (others: x, failed).

    ``aim`` are the targets handed to the attack (default ``targets``); success is judged against
    ``targets`` (None: any label change).  One process verifies each block of ``batch_size`` samples
    as soon as the attack batches covering it are done (:class:`~.streaming.StreamVerifier`), so only
    about two batches of candidates are ever held.  Sharded: this rank attacks its own batches only,
    then the candidates are merged and verified block by block (:func:`~.streaming.verify_blocks`).
    The verdict's ``x_adv`` holds the candidates ``keep`` asks for (:class:`~.store.AdversarialImages`;
    the others read as ``x``)."""
    label = f"{attack.name}" + (f" eps={eps:g}" if eps is not None else "")
    stream = StreamVerifier(model, x, y, todo, targets, norm, eps, batch_size, keep) if shard.world == 1 else None
    out = attack_batches(
        model, attack, x, y, aim=targets if aim is None else aim, todo=todo, norm=norm, eps=eps,
        batch_size=batch_size, seed=seed, seed_tag=attack.name, label=label, progress=progress, shard=shard,
        twin=Criterion(targets), sink=None if stream is None else stream.sink,
    )
    if out.attacked == 0 and progress is not None:
        progress(label, 0, 0)
    if stream is not None:
        return stream.finish(), out.queries, out.twin_fooled
    assert out.x_adv is not None
    shard.merge(shard.rows(out.chunks), out.x_adv, out.queries, out.twin_fooled)
    ver = verify_blocks(model, x, out.x_adv, y, todo, targets, None if eps is None else norm, eps, batch_size, shard)
    images = AdversarialImages(x, None if keep is None else keep.spool)
    if keep is not None:
        measured = ver.linf if norm == "linf" else ver.l2
        images.take(ver.success & keep.rows & (measured <= keep.within), ver.x_adv)
    verified = Verified(images, ver.adv_labels, ver.adv_log_probs, ver.success, ver.linf, ver.l2)
    return verified, out.queries, out.twin_fooled


def _prediction(p: Prediction) -> tuple[np.ndarray, np.ndarray]:
    return p.labels, p.outputs


__all__ = [
    "AttackRow", "AttackRun", "AttackUnit", "UnitStore", "choose_targets", "default_eps", "norms", "resolve_eps",
    "run_attacks",
]
