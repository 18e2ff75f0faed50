"""Honest evaluation of a defence stack: preprocessor-blind, BPDA and BPDA+EOT attacks.

:func:`evaluate_defense` is the Python API behind ``advaudit attack --defense ...``.  For every
adaptive mode it makes adversarial candidates with the chosen attacks on

* ``blind``: the *undefended* model (the papers' preprocessor-blind setting; the candidates are then
  purified by the defence at test time);
* ``bpda``: the defended model, gradients through the defences by BPDA (identity, or a
  differentiable approximation where the defence has one);
* ``bpda+eot``: as ``bpda``, with the log-probabilities averaged over ``eot`` random draws of the
  randomised defences at every gradient step (identical to ``bpda`` for a deterministic stack),

and then verifies every candidate *in the deployment runtime through the real defence*.

Randomised defences are verified over ``eval_draws`` seeded draws (independent of the attacker's
draws).  Under draw ``d`` sample ``i`` meets the same randomness clean and adversarial; it counts as
robust under ``d`` if the defended model classifies it correctly clean and after every attack.  The
accuracies reported are the *expected* accuracies: the mean over samples and draws.  Candidates are
projected into the eps ball (minimum-norm attacks included) and the value range before verification.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..attacks.engine import attack_batches
from ..progress import Progress
from ..attacks.geometry import finalise
from ..attacks.runner import build_attacks, check_eps, choose_targets
from ..attacks.suites import AttackChoice
from ..errors import UsageError
from ..models import Model
from .base import Defense
from .defended import DefendedModel, stack_spec

MODES = ("blind", "bpda", "bpda+eot")
BLIND_GAP = 0.10  # warn when blind robust accuracy exceeds the adaptive one by this much


def parse_modes(text: str) -> list[str]:
    """``all`` or one mode name -> the modes to run, in table order."""
    if text == "all":
        return list(MODES)
    if text not in MODES:
        raise UsageError(f"unknown --adaptive mode {text!r}", f"choose one of {', '.join(MODES)}, all")
    return [text]


@dataclass
class ModeRow:
    """One attack at one eps under one adaptive mode (expected over verification draws)."""

    mode: str
    attack: str
    eps: float
    robust_accuracy: float
    success_rate: float
    time_s: float
    undefended: float | None = None  # blind only: the same candidates on the undefended model


@dataclass
class ModeResult:
    mode: str
    robust_by_eps: dict[float, float]
    rows: list[ModeRow]
    time_s: float
    note: str = ""


@dataclass
class DefenseEval:
    """Everything :func:`evaluate_defense` measured for one defence stack."""

    stack: list[str]
    randomized: bool
    eot: int
    eval_draws: int
    n: int
    norm: str
    eps: list[float]
    attacks: list[str]
    clean_accuracy_undefended: float
    clean_accuracy: float
    undefended_robust_by_eps: dict[float, float]
    modes: dict[str, ModeResult]
    warnings: list[str] = field(default_factory=list)

    @property
    def robust_by_eps(self) -> dict[float, float]:
        """The honest figure per eps: the lowest robust accuracy over the modes run."""
        return {e: min(m.robust_by_eps[e] for m in self.modes.values()) for e in self.eps}

    @property
    def robust_accuracy(self) -> float:
        return self.robust_by_eps[max(self.eps)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "spec": " + ".join(self.stack) if self.stack else "none",
            "randomized": self.randomized,
            "eot_samples": self.eot,
            "eval_draws": self.eval_draws,
            "n": self.n,
            "norm": self.norm,
            "eps": self.eps,
            "attacks": self.attacks,
            "clean_accuracy_undefended": self.clean_accuracy_undefended,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy_undefended_by_eps": {f"{e:g}": v for e, v in self.undefended_robust_by_eps.items()},
            "robust_accuracy": self.robust_accuracy,
            "robust_accuracy_by_eps": {f"{e:g}": v for e, v in self.robust_by_eps.items()},
            "modes": {
                name: {
                    "robust_accuracy": m.robust_by_eps[max(self.eps)],
                    "robust_accuracy_by_eps": {f"{e:g}": v for e, v in m.robust_by_eps.items()},
                    "time_s": m.time_s,
                    "note": m.note or None,
                    "results": [
                        {"attack": r.attack, "eps": r.eps, "robust_accuracy": r.robust_accuracy,
                         "success_rate": r.success_rate, "time_s": r.time_s,
                         "robust_accuracy_undefended": r.undefended}
                        for r in m.rows
                    ],
                }
                for name, m in self.modes.items()
            },
            "warnings": self.warnings,
        }


def defended_labels(defended: DefendedModel, x: np.ndarray, draws: int, batch_size: int) -> np.ndarray:
    """Deployment-runtime labels through the real defences under each verification draw: (D, N)."""
    out = []
    for d in range(draws):
        defended.draw = d
        out.append(defended.predict(x, batch_size=batch_size).labels)
    defended.draw = 0
    return np.stack(out)


def evaluate_defense(
    model: Model,
    x: np.ndarray,
    y: np.ndarray,
    stack: Sequence[Defense],
    choices: list[AttackChoice],
    eps: list[float],
    *,
    modes: Sequence[str] = MODES,
    norm: str = "linf",
    eot: int = 10,
    eval_draws: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress | None = None,
) -> DefenseEval:
    """Evaluate ``stack`` in front of ``model`` under every mode in ``modes``; see module docstring."""
    eps = check_eps(model, eps, norm)
    attacks = build_attacks(choices, model, norm, False)
    randomized = any(d.randomized for d in stack)
    draws = (5 if randomized else 1) if eval_draws is None else int(eval_draws)
    if draws < 1:
        raise UsageError(f"--eval-draws must be >= 1, got {draws}")
    if eot < 1:
        raise UsageError(f"--eot must be >= 1, got {eot}")
    lo, hi = model.spec.range
    verifier = DefendedModel(model, stack, eval_seed=seed)
    clean_und = model.predict(x, batch_size=batch_size).labels == y
    clean_def = defended_labels(verifier, x, draws, batch_size) == y[None]  # (D, N)
    todo = clean_def.any(axis=0)
    assert model.num_classes is not None
    random_targets = choose_targets("random", y, np.zeros((len(y), model.num_classes)), model.num_classes, seed)

    results: dict[str, ModeResult] = {}
    und_robust = {e: clean_und.copy() for e in eps}
    for mode in modes:
        if mode == "bpda+eot" and not randomized and "bpda" in results:
            prev = results["bpda"]
            copied = [ModeRow("bpda+eot", r.attack, r.eps, r.robust_accuracy, r.success_rate, 0.0) for r in prev.rows]
            results[mode] = ModeResult(mode, dict(prev.robust_by_eps), copied, 0.0,
                                       "no randomised defence in the stack: identical to bpda")
            continue
        attacker: Model = model if mode == "blind" else DefendedModel(
            model, stack, eot=eot if mode == "bpda+eot" else 1, seed=seed + 1, eval_seed=seed
        )
        robust = {e: clean_def.copy() for e in eps}
        rows = []
        start_mode = time.perf_counter()
        for choice, attack in zip(choices, attacks):
            budgets: list[float | None] = [None] if attack.minimum_norm else list(eps)
            for budget in budgets:
                t0 = time.perf_counter()
                aim = None if attack.supports_untargeted else random_targets
                # blind also attacks what only the undefended model gets right: its own column needs them
                which = todo | clean_und if mode == "blind" else todo
                label = f"{mode} {attack.name}" + (f" eps={budget:g}" if budget is not None else "")
                cand = attack_batches(
                    attacker, attack, x, y, aim=aim, todo=which, norm=norm, eps=budget, batch_size=batch_size,
                    seed=seed, seed_tag=f"{mode}/{attack.name}", label=label, progress=progress,
                ).x_adv
                assert cand is not None
                for e in ([budget] if budget is not None else eps):
                    x_fin = finalise(x, cand, lo, hi, norm, e)
                    correct = defended_labels(verifier, x_fin, draws, batch_size) == y[None]
                    und = None
                    if mode == "blind":
                        und_ok = model.predict(x_fin, batch_size=batch_size).labels == y
                        und_robust[e] &= und_ok
                        und = float((clean_und & und_ok).mean())
                    survived = clean_def & correct
                    robust[e] &= correct
                    n_correct = max(int(clean_def.sum()), 1)
                    rows.append(ModeRow(
                        mode, str(choice), e, float(survived.mean()),
                        float((clean_def & ~correct).sum() / n_correct), time.perf_counter() - t0, und,
                    ))
        by_eps = {e: float(robust[e].mean()) for e in eps}
        results[mode] = ModeResult(mode, by_eps, rows, time.perf_counter() - start_mode)

    ev = DefenseEval(
        stack=[d.spec() for d in stack],
        randomized=randomized,
        eot=eot if randomized else 1,
        eval_draws=draws,
        n=len(x),
        norm=norm,
        eps=eps,
        attacks=[str(c) for c in choices],
        clean_accuracy_undefended=float(clean_und.mean()),
        clean_accuracy=float(clean_def.mean()),
        undefended_robust_by_eps={e: float(v.mean()) for e, v in und_robust.items()} if "blind" in results else {},
        modes=results,
    )
    ev.warnings = defense_warnings(ev, stack_spec(stack))
    return ev


def defense_warnings(ev: DefenseEval, spec: str) -> list[str]:
    """Flag defences that only look strong against attackers who ignore them."""
    out: list[str] = []
    e = max(ev.eps)
    if "blind" in ev.modes:
        blind = ev.modes["blind"].robust_by_eps[e]
        adaptive = {m: r.robust_by_eps[e] for m, r in ev.modes.items() if m != "blind"}
        if adaptive:
            worst_mode = min(adaptive, key=lambda m: adaptive[m])
            worst = adaptive[worst_mode]
            if blind - worst >= BLIND_GAP:
                out.append(
                    f"defence {spec} only looks strong under blind: robust accuracy {100 * blind:.1f}% blind "
                    f"vs {100 * worst:.1f}% under {worst_mode} at eps {e:g}; report the adaptive figure"
                )
            for m, v in adaptive.items():
                if v > blind + BLIND_GAP / 2:
                    out.append(
                        f"{m} is weaker than blind for {spec} ({100 * v:.1f}% vs {100 * blind:.1f}%): the gradient "
                        "approximation may be poor; add attack steps or restarts before trusting either figure"
                    )
    if ev.randomized and "bpda+eot" not in ev.modes:
        out.append(f"{spec} is randomised: run --adaptive bpda+eot (or all) for the honest figure")
    return out
