"""The ``defend`` job: evaluate a defence stack in front of a model under blind, BPDA and BPDA+EOT
attacks (:mod:`advaudit.defenses.evaluate`) and report the honest robust accuracy.

``advaudit attack --defense ...``, the audit's ``defense`` step and Python callers run :func:`defend`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..attacks.runner import build_attacks, resolve_eps
from ..attacks.suites import resolve_choices
from ..defenses import build_stack
from ..defenses.defended import stack_spec
from ..defenses.evaluate import DefenseEval, evaluate_defense, parse_modes
from ..report.gates import evaluate_gates, parse_gate
from ..report.writer import model_section, write_json
from .attack import SuiteOptions
from .base import JobContext, RunRecord, batch_size_for, open_inputs


@dataclass(frozen=True, kw_only=True)
class DefendOptions(SuiteOptions):
    """Everything a defence evaluation depends on; every default of ``advaudit attack --defense``.

    ``defenses`` are ``NAME[:k=v,...]`` texts stacked in order; ``adaptive`` is ``blind``, ``bpda``,
    ``bpda+eot`` or ``all``; ``eot`` random draws are averaged per gradient in bpda+eot;
    ``eval_draws`` None verifies randomised stacks over 5 seeded draws (deterministic ones over 1).
    The attack fields are :class:`~advaudit.jobs.attack.SuiteOptions`'."""

    defenses: tuple[str, ...]
    adaptive: str = "all"
    eot: int = 10
    eval_draws: int | None = None
    command: str = "advaudit attack --defense"


@dataclass
class DefendResult(RunRecord):
    """A defence evaluation and what its report says about the model and data it ran on."""

    kind: ClassVar[str] = "attack"

    ev: DefenseEval

    def metrics(self) -> dict[str, Any]:
        """``clean_accuracy`` and ``robust_accuracy[@EPS]`` of the defended model (robust: the lowest
        over the modes run), and ``clean_accuracy_undefended``."""
        ev = self.ev
        m: dict[str, Any] = {"clean_accuracy": ev.clean_accuracy, "robust_accuracy": ev.robust_accuracy}
        for e, v in ev.robust_by_eps.items():
            m[f"robust_accuracy@{e:g}"] = v
        m["clean_accuracy_undefended"] = ev.clean_accuracy_undefended
        return m

    def to_report(self) -> dict[str, Any]:
        """The JSON report (schema ``advaudit.report/1``, kind ``attack``, with a ``defense`` section).

        ``clean_accuracy`` and ``robust_accuracy`` are those of the *defended* model; the robust
        figure is the lowest over the adaptive modes run (the honest one), and gates apply to it."""
        ev = self.ev
        return {
            **self.report_start("attack"),
            "norm": ev.norm,
            "eps": ev.eps,
            "targeted": None,
            "clean_accuracy": ev.clean_accuracy,
            "robust_accuracy": ev.robust_accuracy,
            "robust_accuracy_by_eps": {f"{e:g}": v for e, v in ev.robust_by_eps.items()},
            "defense": ev.to_dict(),
            "warnings": ev.warnings,
            "gates": self.gates,
            "passed": self.passed,
        }


def defend(options: DefendOptions, ctx: JobContext | None = None) -> DefendResult:
    """Evaluate ``options.defenses`` in front of ``options.model`` on ``options.data``; write the report."""
    ctx = ctx or JobContext()
    gates = [parse_gate(g) for g in options.fail_under]
    choices, _ = resolve_choices(options.suite, options.attacks)
    stack = build_stack(list(options.defenses))  # bad names/params fail before any work
    modes = parse_modes(options.adaptive)
    ctx.log(f"loading {options.model.path} ...")
    model, data = open_inputs(options.model, options.data, ctx)
    assert model.input_shape is not None and data is not None and data.y is not None
    for d in stack:
        d.fits(tuple(model.input_shape))
    eps = resolve_eps(model, list(options.eps), options.norm)
    build_attacks(choices, model, options.norm, False)
    ctx.log(
        f"{len(data)} samples, defence {stack_spec(stack)}, modes {', '.join(modes)}, attacks: "
        f"{', '.join(str(c) for c in choices)}, {options.norm} eps {', '.join(f'{e:g}' for e in eps)}"
    )
    ev = evaluate_defense(
        model, data.x, data.y, stack, choices, eps, modes=modes, norm=options.norm, eot=options.eot,
        eval_draws=options.eval_draws, batch_size=batch_size_for(options.batch_size, model.input_shape,
                                                                 options.batch_base),
        seed=options.seed, progress=ctx.progress,
    )
    result = DefendResult(
        ev=ev, model=model_section(model, search=True), data={**data.dataset.describe()}, command=options.command,
        seed=options.seed, gates=evaluate_gates(gates, ev.clean_accuracy, ev.robust_by_eps),
    )
    if options.report:
        write_json(options.report, result.to_report())
        ctx.log(f"wrote report {options.report}")
    return result
