"""Run attacks over a data set, verify every example, and aggregate the figures.

:func:`run_attacks` is the Python API behind ``advaudit attack``.  It attacks only the correctly
classified samples, in batches, at every eps; re-checks every candidate in the deployment runtime
(:mod:`.verify`); keeps, per sample and eps, whether *any* attack fooled it (the per-sample worst
case); and, for a cascade suite, runs each attack only on the samples still robust.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..distributed import Shard
from ..errors import UsageError
from ..models import Model
from ..models.base import Prediction
from . import get_attack
from .base import Attack
from .masking import masking_warnings
from .suites import AttackChoice
from .verify import Verified, norms, verify

Progress = Callable[[str, int, int], None]


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
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    clean_labels: np.ndarray = field(repr=False)
    clean_probs: np.ndarray = field(repr=False)
    adv: dict[float, np.ndarray] = field(repr=False)  # per eps: first verified adversarial (or x)
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


def _batch_seed(seed: int, attack: str, eps: float | None, start: int) -> int:
    return zlib.crc32(f"{seed}/{attack}/{eps}/{start}".encode()) & 0x7FFFFFFF


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


def run_attacks(
    model: Model,
    x: np.ndarray,
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
) -> AttackRun:
    """Attack ``x`` (canonical, model-ready) with every choice at every eps; see module docstring.

    ``shard``: this process's share of a sharded run (default: one process); every rank must call
    with the same arguments, and every rank returns the same :class:`AttackRun`."""
    shard = shard or Shard.single()
    eps = check_eps(model, eps, norm)
    attacks = build_attacks(choices, model, norm, target is not None)
    labels, outputs = _blocks(
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
    adv = {e: x.copy() for e in eps}
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
            start = time.perf_counter()
            ver, queries, rejected = _attack_all(
                model, attack, x, y, targets, todo, norm, budget, batch_size, seed, progress, shard,
                aim=random_targets if targets is None and not attack.supports_untargeted else targets,
            )
            elapsed = time.perf_counter() - start
            measured = ver.linf if norm == "linf" else ver.l2
            for e in ([budget] if budget is not None else eps):
                ok = ver.success & (measured <= e)
                fresh = ok & robust[e]
                adv[e][fresh], adv_by[e][fresh] = ver.x_adv[fresh], k
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
    x: np.ndarray,
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
) -> tuple[Verified, np.ndarray, np.ndarray]:
    """Attack the ``todo`` samples in batches; return verdicts for all samples (others: x, failed).

    ``aim`` are the targets handed to the attack (default ``targets``); success is judged against
    ``targets`` (None: any label change).  Sharded: this rank attacks its own batches only, then the
    candidates are merged and verified block by block (:func:`_verify`)."""
    aim = targets if aim is None else aim
    idx = np.flatnonzero(todo)
    x_adv = x.copy()
    queries = np.zeros(len(x), dtype=np.int64)
    twin_fooled = np.zeros(len(x), dtype=bool)
    label = f"{attack.name}" + (f" eps={eps:g}" if eps is not None else "")
    attack_norm = norm if norm in attack.norms else attack.norms[0]
    chunks = [idx[start : start + batch_size] for start in range(0, len(idx), batch_size)]
    own = shard.mine(len(chunks))
    own_total = sum(len(chunks[j]) for j in own)
    done = 0
    for j in own:
        b = chunks[j]
        xb = torch.from_numpy(x[b]).to(model.device)
        yb = torch.from_numpy(y[b]).to(model.device)
        tb = None if aim is None else torch.from_numpy(aim[b]).to(model.device)
        out = attack(model, xb, yb, eps=eps, norm=attack_norm, targets=tb, seed=_batch_seed(seed, attack.name, eps, int(b[0])))
        x_adv[b] = out.x_adv.cpu().numpy()
        queries[b] = out.queries.cpu().numpy()
        if attack.uses_gradients and model.format == "onnx":  # TorchScript, torch.export: twin == runtime
            with torch.no_grad():
                pred = model.logits(out.x_adv).argmax(dim=1).cpu().numpy()
            twin_fooled[b] = pred != y[b] if targets is None else pred == targets[b]
        done += len(b)
        if progress is not None:  # sharded: this rank's share
            progress(label, done, own_total)
    if own_total == 0 and progress is not None:
        progress(label, 0, 0)
    shard.merge(shard.rows(chunks), x_adv, queries, twin_fooled)
    ver = _verify(model, x, x_adv, y, todo, targets, None if eps is None else norm, eps, batch_size, shard)
    return ver, queries, twin_fooled


def _prediction(p: Prediction) -> tuple[np.ndarray, np.ndarray]:
    return p.labels, p.outputs


def _blocks(
    shard: Shard, n: int, size: int, compute: Callable[[int, int], tuple[np.ndarray, ...]]
) -> tuple[np.ndarray, ...]:
    """Per-sample arrays computed block by block (``[0, size)``, ``[size, 2 size)``, ...): one
    process computes all rows at once (the same batches inside), a rank its own blocks, merged."""
    if shard.world == 1:
        return compute(0, n)
    starts = list(range(0, n, size))
    parts = shard.map(lambda s: compute(s, min(s + size, n)), starts)
    if not parts:
        return compute(0, 0)
    return tuple(np.concatenate(cols) for cols in zip(*parts))


def _verify(
    model: Model, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, todo: np.ndarray, targets: np.ndarray | None,
    norm: str | None, eps: float | None, batch_size: int, shard: Shard,
) -> Verified:
    """:func:`verify` over all samples, each rank verifying its own blocks of ``batch_size``."""

    def block(s: int, e: int) -> tuple[np.ndarray, ...]:
        v = verify(model, x[s:e], x_adv[s:e], y[s:e], todo[s:e], None if targets is None else targets[s:e], norm, eps, batch_size)
        return v.x_adv, v.adv_labels, v.adv_log_probs, v.success, v.linf, v.l2

    return Verified(*_blocks(shard, len(x), batch_size, block))


__all__ = ["AttackRow", "AttackRun", "choose_targets", "default_eps", "norms", "resolve_eps", "run_attacks"]
