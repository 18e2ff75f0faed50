"""Neural Cleanse: reverse-engineer a minimal trigger per label, then look for an outlier.

Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks",
IEEE S&P 2019, https://doi.org/10.1109/SP.2019.00031 (reference code: bolunwang/backdoor).
Threat model: white-box access to the weights (gradients) and a small set of clean labelled images.

For every label ``t`` NC searches a mask ``m`` (one channel, shared by the colour channels, in
[0, 1]) and a pattern ``p`` (in the value range) so that ``(1 - m) * x + m * p`` is classified as
``t`` for clean ``x``, with the smallest L1 norm of ``m``:

    loss_t = CE(f((1 - m) * x + m * p), t) + cost_t * |m|_1,
    m = tanh(m') / (2 - eps) + 0.5,   p = lo + (hi - lo) * (tanh(p') / (2 - eps) + 0.5)

optimised with Adam (lr 0.1, betas (0.5, 0.9)) from a uniform random start, with the reference
code's cost schedule per label: cost starts at 0 and is set to ``init_cost`` (1e-3) after
``patience`` (5) consecutive steps with attack success >= 0.99 on the step's batch; then it is
multiplied by 2 after ``patience`` consecutive successes and divided by 2**1.5 after ``patience``
consecutive failures.  The best (smallest-norm) mask that reaches the success threshold is kept;
a label stops once its cost has moved both up and down and its best norm has not improved (by the
reference code's factor 0.99) for ``early_stop_patience`` (25) steps.  The outlier test is
:func:`advaudit.backdoor.mad.mad_outliers` (MAD x 1.4826, anomaly index > 2, norms below the median).

Speed: all labels are optimised together as one batched problem.  Masks are a (K, 1, H, W) tensor,
patterns (K, C, H, W), and costs, counters and flags are per-label vectors; each step stamps one
mini-batch of clean images with every still-running label's trigger and runs one forward/backward
pass over the (K_active * B) stamped images.  Adam is element-wise, so summing the per-label losses
keeps the labels' optimisations independent.  A label that stopped early drops out of the batch.

Departures from the reference code (documented in the README):

* The reference code checks the schedule once per *epoch* (all mini-batches of the clean set) with
  the epoch's mean success rate; here one schedule step is one mini-batch (``batch_size`` images),
  so ``patience`` and ``early_stop_patience`` count mini-batches.  With the 100-500 images a user
  has, an epoch is only a few mini-batches anyway, and this makes a full scan fit in a minute on
  two CPU cores.  ``steps`` caps the number of mini-batch steps (the reference caps epochs).
* A label that never reaches the success threshold keeps its last mask and is reported with
  ``reached: false`` (the reference code would save nothing).
* The attack success rate reported per class is re-measured after the search in the deployment
  runtime (ONNX Runtime for ``.onnx``) on all clean images not already of that class.

Interruption: with a :class:`~advaudit.backdoor.base.SearchStore` (``advaudit scan-backdoor
--report``), the whole search state (masks, patterns, Adam moments, cost schedule, best triggers,
the generator and the mini-batch order) is saved each time a label stops, and a resumed search
continues from it exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..models import Model
from . import reference as ref
from .base import BackdoorScanner, ClassEvidence, ScanContext, ScanResult, SearchStore
from .labels import (
    CANDIDATES, REFERENCES, SELECT_ABOVE, WARMUP_STEPS, full_triggers, outlier_tests, parse_labels, plan_labels,
)
from .mad import ANOMALY_THRESHOLD, GAP_ALPHA, MIN_RATIO
from .nc_schedule import CostSchedule, NCConfig, Reconstruction

EPSILON = 1e-7  # the reference code's K.epsilon() in the tanh re-parametrisation


def _squash(t: torch.Tensor) -> torch.Tensor:
    return torch.tanh(t) / (2 - EPSILON) + 0.5


def _unsquash(v: torch.Tensor) -> torch.Tensor:
    return torch.atanh((v - 0.5) * (2 - EPSILON))


def reconstruct_triggers(
    logits: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    targets: list[int] | np.ndarray,
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    config: NCConfig | None = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    state: SearchStore | None = None,
) -> Reconstruction:
    """Neural Cleanse's trigger search for all ``targets`` at once (see the module docstring).

    ``logits`` is a differentiable forward on canonical inputs; ``x`` the clean images (N, C, H, W);
    ``progress(step, steps, labels_running)`` is called every 10 steps; ``state`` keeps the search
    state each time a label stops and, when it holds one, the search continues from there.
    """
    cfg = (config or NCConfig()).check()
    gen = generator or torch.Generator().manual_seed(0)
    tg = np.asarray(targets, dtype=np.int64)
    k = len(tg)
    n, c, h, w = x.shape
    lo, hi = value_range
    dev = x.device
    mask_t = _unsquash(torch.rand((k, 1, h, w), generator=gen)).to(dev).requires_grad_(True)
    pattern_t = _unsquash(torch.rand((k, c, h, w), generator=gen)).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([mask_t, pattern_t], lr=cfg.lr, betas=cfg.betas)
    sched = CostSchedule(k, cfg)
    best_mask = torch.zeros((k, 1, h, w))
    best_pattern = torch.zeros((k, c, h, w))
    active = np.ones(k, dtype=bool)
    steps_run = np.zeros(k, dtype=np.int64)
    tg_t = torch.from_numpy(tg).to(dev)
    b = min(cfg.batch_size, n)
    perm, pos = torch.randperm(n, generator=gen), 0
    first = 0
    saved = state.load() if state is not None else None
    if saved is not None:
        first, pos, perm = _restore(
            saved, gen, opt, [mask_t, pattern_t], sched, best_mask, best_pattern, active, steps_run
        )
    for step in range(first, cfg.steps):
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        if pos + b > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        xb = x[perm[pos : pos + b].to(dev)]
        pos += b
        idx_t = torch.from_numpy(idx).to(dev)
        m = _squash(mask_t[idx_t])  # (A, 1, H, W)
        p = lo + (hi - lo) * _squash(pattern_t[idx_t])  # (A, C, H, W)
        stamped = (1 - m[:, None]) * xb[None] + (m * p)[:, None]  # (A, B, C, H, W)
        out = logits(stamped.reshape(-1, c, h, w)).reshape(len(idx), b, -1)
        tgt = tg_t[idx_t]
        ce = F.cross_entropy(out.reshape(len(idx) * b, -1), tgt.repeat_interleave(b), reduction="none")
        ce = ce.view(len(idx), b).mean(dim=1)
        reg = m.abs().sum(dim=(1, 2, 3))
        cost = torch.as_tensor(sched.cost[idx], dtype=reg.dtype, device=dev)
        loss = (ce + cost * reg).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            acc = (out.argmax(dim=-1) == tgt[:, None]).float().mean(dim=1).cpu().numpy()
            reg_np = reg.detach().cpu().numpy().astype(np.float64)
            improved, stop = sched.update(idx, acc, reg_np)
            if improved.any():
                sel = torch.from_numpy(np.flatnonzero(improved))
                best_mask[idx[improved]] = m.detach()[sel.to(dev)].cpu()
                best_pattern[idx[improved]] = p.detach()[sel.to(dev)].cpu()
        steps_run[idx] += 1
        active[idx[stop]] = False
        if state is not None and stop.any():
            arrays = _snapshot(step + 1, pos, perm, gen, opt, [mask_t, pattern_t], sched, best_mask, best_pattern)
            state.save({**arrays, "active": active, "steps_run": steps_run}, int((~active).sum()), k)
        if progress is not None and (step % 10 == 0 or not active.any()):
            progress(step + 1, cfg.steps, int(active.sum()))
    reached = np.isfinite(sched.reg_best)
    with torch.no_grad():
        last_m = _squash(mask_t).cpu()
        last_p = (lo + (hi - lo) * _squash(pattern_t)).cpu()
    miss = torch.from_numpy(~reached)
    best_mask[miss] = last_m[miss]
    best_pattern[miss] = last_p[miss]
    l1 = best_mask.abs().sum(dim=(1, 2, 3)).numpy().astype(np.float64)
    return Reconstruction(tg, best_mask.numpy(), best_pattern.numpy(), l1, reached, steps_run, sched.cost.copy())


def _snapshot(
    step: int, pos: int, perm: torch.Tensor, gen: torch.Generator, opt: torch.optim.Optimizer,
    params: list[torch.Tensor], sched: CostSchedule, best_mask: torch.Tensor, best_pattern: torch.Tensor,
) -> dict[str, np.ndarray]:
    """The search state after ``step`` steps as arrays (see :func:`_restore`)."""
    out = {
        "step": np.array(step), "pos": np.array(pos), "perm": perm.numpy().copy(),
        "generator": gen.get_state().numpy().copy(),
        "best_mask": best_mask.numpy().copy(), "best_pattern": best_pattern.numpy().copy(),
    }
    for i, p in enumerate(params):
        out[f"param{i}"] = p.detach().cpu().numpy().copy()
        for name, v in opt.state[p].items():
            out[f"adam{i}.{name}"] = v.detach().cpu().numpy().copy() if torch.is_tensor(v) else np.array(v)
    for name, v in vars(sched).items():
        if isinstance(v, np.ndarray):
            out[f"sched.{name}"] = v.copy()
    return out


def _restore(
    a: dict[str, np.ndarray], gen: torch.Generator, opt: torch.optim.Optimizer, params: list[torch.Tensor],
    sched: CostSchedule, best_mask: torch.Tensor, best_pattern: torch.Tensor, active: np.ndarray,
    steps_run: np.ndarray,
) -> tuple[int, int, torch.Tensor]:
    """Put a :func:`_snapshot` back in place; returns ``(next step, pos, perm)``."""
    gen.set_state(torch.from_numpy(a["generator"].copy()))
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(torch.from_numpy(a[f"param{i}"]).to(p.device))
            prefix = f"adam{i}."
            # Adam keeps its step count on the CPU, its moments beside the parameter
            opt.state[p] = {
                k[len(prefix):]: torch.from_numpy(v.copy()).to("cpu" if k == prefix + "step" else p.device)
                for k, v in a.items() if k.startswith(prefix)
            }
        best_mask.copy_(torch.from_numpy(a["best_mask"]))
        best_pattern.copy_(torch.from_numpy(a["best_pattern"]))
    for name in list(vars(sched)):
        if f"sched.{name}" in a:
            setattr(sched, name, a[f"sched.{name}"].copy())
    active[:] = a["active"]
    steps_run[:] = a["steps_run"]
    return int(a["step"]), int(a["pos"]), torch.from_numpy(a["perm"].copy())


def stamp(x: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """``(1 - mask) * x + mask * pattern`` (broadcast over the batch)."""
    return ((1 - mask) * x + mask * pattern).astype(np.float32)


def trigger_asr(
    model: Model, x: np.ndarray, y: np.ndarray | None, masks: np.ndarray, patterns: np.ndarray,
    targets: np.ndarray, batch_size: int = 256,
) -> np.ndarray:
    """Attack success rate of each trigger in the deployment runtime, on the clean images that are
    not already of its target class (all images when unlabelled)."""
    asr = np.zeros(len(targets))
    for i, t in enumerate(targets):
        xs = x if y is None else x[y != t]
        if len(xs) == 0:
            asr[i] = float("nan")
            continue
        pred = model.predict(stamp(xs, masks[i], patterns[i]), batch_size=batch_size).labels
        asr[i] = float((pred == t).mean())
    return asr


class NeuralCleanse(BackdoorScanner):
    """Neural Cleanse (Wang et al. 2019): smallest trigger per label + an outlier test.

    ``rule="gap"`` (default): :func:`~advaudit.backdoor.mad.gap_test`, the anomaly index on log norms
    with a p-value from the per-model null (``alpha``) and a norm at most ``median / min_ratio``;
    ``rule="paper"``: the paper's MAD rule on raw norms (anomaly index > ``anomaly_threshold``);
    ``rule="reference"``: each label's norm against the same label in clean models of the task (``reference``:
    one row of K mask norms per model; :mod:`advaudit.backdoor.reference`), every label optimised in full.
    ``labels`` and the selection settings: :mod:`advaudit.backdoor.labels`."""

    rules = ("gap", "paper", "reference")
    reference_key = "mask_l1"
    reference_side = "low"
    reference_settings = ("steps", "batch_size", "lr", "init_cost", "patience", "early_stop_patience",
                          "early_stop_threshold", "attack_succ_threshold", "cost_multiplier")

    name = "neural-cleanse"
    min_per_class = 5

    def __init__(
        self,
        *,
        steps: int = 1000,
        batch_size: int = 32,
        lr: float = 0.1,
        init_cost: float = 1e-3,
        patience: int = 5,
        early_stop_patience: int = 25,
        early_stop_threshold: float = 0.99,
        attack_succ_threshold: float = 0.99,
        cost_multiplier: float = 2.0,
        rule: str = "gap",
        alpha: float = GAP_ALPHA,
        min_ratio: float = MIN_RATIO,
        anomaly_threshold: float = ANOMALY_THRESHOLD,
        labels: tuple[int, ...] | None = None,
        select_above: int = SELECT_ABOVE,
        warmup_steps: int = WARMUP_STEPS,
        candidates: int = CANDIDATES,
        references: int = REFERENCES,
        reference: tuple[tuple[float, ...], ...] | None = None,
    ) -> None:
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.init_cost = float(init_cost)
        self.patience = int(patience)
        self.early_stop_patience = int(early_stop_patience)
        self.early_stop_threshold = float(early_stop_threshold)
        self.attack_succ_threshold = float(attack_succ_threshold)
        self.cost_multiplier = float(cost_multiplier)
        if rule not in self.rules:
            raise UsageError(f"neural-cleanse: rule must be one of {', '.join(self.rules)}, got {rule!r}")
        if (rule == "reference") != (reference is not None) or (reference is not None and labels is not None):
            raise UsageError("neural-cleanse: the reference rule needs reference= and scans every label (no labels=)",
                             "give the clean reference scans with --reference")
        if not 0 < alpha < 1 or min_ratio < 1:
            raise UsageError("neural-cleanse: alpha must be in (0, 1) and min_ratio at least 1")
        if min(select_above, warmup_steps, candidates) < 1 or references < 3:
            raise UsageError("neural-cleanse: select_above, warmup_steps and candidates must be at least 1, "
                             "references at least 3")
        self.rule = rule
        self.alpha = float(alpha)
        self.min_ratio = float(min_ratio)
        self.anomaly_threshold = float(anomaly_threshold)
        self.labels = None if labels is None else tuple(int(t) for t in labels)
        self.select_above = int(select_above)
        self.warmup_steps = int(warmup_steps)
        self.candidates = int(candidates)
        self.references = int(references)
        self._reference = ref.scanner_reference(self.name, reference, self.reference_side)
        self.reference_models = None if self._reference is None else self._reference.models
        self.config().check()

    def config(self) -> NCConfig:
        return NCConfig(
            steps=self.steps, batch_size=self.batch_size, lr=self.lr, init_cost=self.init_cost,
            patience=self.patience, early_stop_patience=self.early_stop_patience,
            early_stop_threshold=self.early_stop_threshold, attack_succ_threshold=self.attack_succ_threshold,
            cost_multiplier=self.cost_multiplier,
        )

    def run(self, ctx: ScanContext, x: np.ndarray | None, y: np.ndarray | None) -> ScanResult:
        assert x is not None
        xt = torch.from_numpy(x).to(ctx.device)
        k = ctx.num_classes

        def search(targets: np.ndarray, config: NCConfig, state: SearchStore | None = None,
                   stage: str = "warm-up") -> Reconstruction:
            return reconstruct_triggers(
                ctx.logits, xt, targets, value_range=(ctx.lo, ctx.hi), config=config, generator=ctx.generator,
                progress=lambda s, total, running: ctx.report(f"neural-cleanse {stage} ({running} labels running)",
                                                              s, total),
                state=state,
            )

        reference = self._reference
        if reference is not None:  # before the search
            ref.check_classes(self.name, reference, k)
        plan = plan_labels(
            k, search, self.config(), ctx.generator, labels=parse_labels(self.labels, k),
            select_above=k if reference is not None else self.select_above,  # the reference rule: every label
            warmup_steps=self.warmup_steps, candidates=self.candidates,
            references=self.references, progress=lambda d, t: ctx.report("neural-cleanse: label warm-up", d, t),
        )
        rec = search(plan.optimised, self.config(), ctx.state, "search")
        ctx.report("neural-cleanse: attack success in the runtime", 0, 1)
        asr = trigger_asr(ctx.model, x, y, rec.masks, rec.patterns, rec.targets)
        tests = outlier_tests(rec, plan, self.alpha, self.min_ratio, self.anomaly_threshold)
        gap = tests.gap
        versus = None if reference is None else ref.scanner_test(self.name, rec.l1, reference, self.alpha)
        rule_flags, p_value = {"gap": (gap.flagged, gap.p_value), "paper": (tests.paper.flagged, None),
                               **({} if versus is None else {"reference": (versus.flagged, versus.p_value)})}[self.rule]
        flagged = rule_flags & np.isin(rec.targets, plan.tested)
        order = rec.l1[flagged] if versus is None else versus.p_values[flagged]  # most suspicious first
        suspects = [int(t) for t in rec.targets[flagged][np.argsort(order, kind="stable")]]
        masks, patterns = full_triggers(k, rec, plan.warmup)
        classes = [ClassEvidence(label=t, flagged=False) for t in range(k)]
        if plan.warmup is not None:
            for i, t in enumerate(plan.warmup.targets):
                classes[t].extra = {"optimised": False, "warmup_l1": float(plan.warmup.l1[i])}
        for i, t in enumerate(rec.targets):
            classes[t] = ClassEvidence(
                label=int(t), flagged=bool(flagged[i]), mask_l1=float(rec.l1[i]),
                anomaly_index=_finite(tests.paper.anomaly_index[i]), asr=None if math.isnan(asr[i]) else float(asr[i]),
                extra={
                    "reached": bool(rec.reached[i]), "steps": int(rec.steps_run[i]),
                    "final_cost": float(rec.final_cost[i]), "log_anomaly_index": float(tests.gap.index[i]),
                    "norm_ratio": float(tests.gap.ratio[i]), "p_value": float(tests.gap.p_values[i]),
                    **({} if versus is None else {"reference_index": float(versus.index[i]),
                                                  "reference_p_value": float(versus.p_values[i])}),
                },
            )
        tested = np.flatnonzero(np.isin(rec.targets, plan.tested))
        score = gap.ratio if versus is None else versus.index
        top = int(rec.targets[tested[np.argmax(score[tested])]]) if tested.size else None
        return ScanResult(
            method=self.name,
            verdict="backdoored" if suspects else "clean",
            suspected_targets=suspects,
            classes=classes,
            params={},
            evidence={
                "rule": self.rule,
                "p_value": p_value,
                "alpha": self.alpha,
                "min_ratio": self.min_ratio,
                "largest_norm_ratio": float(gap.ratio.max()),
                "top_class": top,
                "median_l1": gap.median if self.rule == "gap" else tests.paper.median,
                "mad": tests.paper.mad,
                "max_anomaly_index": _finite(tests.paper.max_anomaly_index),
                "anomaly_threshold": self.anomaly_threshold,
                "labels": plan.describe(),
                "images_sha256": ref.images_digest(x),
                **({} if reference is None else {"reference": reference.describe()}),
            },
            masks=masks,
            patterns=patterns,
        )


def _finite(v: float) -> float | None:
    """JSON has no infinity: an infinite anomaly index is reported as 1e9."""
    v = float(v)
    return 1e9 if math.isinf(v) else v
