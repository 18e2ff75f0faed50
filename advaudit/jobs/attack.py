"""The ``attack`` job: run attack suites against a model, verify every adversarial example in the
deployment runtime, gate on the result and write the report and artefacts.

``advaudit attack``, the audit's ``attack`` step and Python callers all run :func:`attack`.  With
``workers > 1`` (or under torchrun) the work is sharded: each rank gets the options object and a
:class:`AttackPlan` (both frozen and picklable) and opens its own model and data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..attacks.artifacts import example_grid_for_run, save_adversarial
from ..attacks.runner import AttackRun, build_attacks, resolve_eps, run_attacks
from ..attacks.suites import AttackChoice, resolve_choices
from ..checkpoint import AttackUnits, Checkpoint, data_inputs, make_inputs
from ..distributed import Shard, is_main_process, run_sharded
from ..report.gates import evaluate_gates, parse_gate
from ..report.writer import model_section, write_json
from .base import DataOptions, JobContext, JobOptions, Progress, RunRecord, batch_size_for, new_meta, open_inputs

if TYPE_CHECKING:
    from ..data import PreparedData
    from ..models import Model


@dataclass(frozen=True, kw_only=True)
class SuiteOptions(JobOptions):
    """The attack fields ``advaudit attack`` and ``advaudit attack --defense`` share: the data, the
    attacks (``NAME[:k=v,...]`` texts as the user wrote them, or a ``suite``; neither: the standard
    suite), budgets (``eps`` empty: 8/255 of the value range for linf, half of it for l2), the
    ``METRIC=VALUE`` gates of ``fail_under`` and the batch (None fits ``batch_base`` to the input)."""

    data: DataOptions
    suite: str | None = None
    attacks: tuple[str, ...] = ()
    eps: tuple[float, ...] = ()
    norm: str = "linf"
    fail_under: tuple[str, ...] = ()
    batch_size: int | None = None
    batch_base: int = 256


@dataclass(frozen=True, kw_only=True)
class AttackOptions(SuiteOptions):
    """Everything an attack run depends on; every default of ``advaudit attack`` lives here.

    ``attacks`` are ``NAME[:k=v,...]`` texts as the user wrote them (or give a ``suite``; neither:
    the standard suite); ``eps`` empty means 8/255 of the value range (linf) or half of it (l2);
    ``target`` is None (untargeted), ``least-likely``, ``random`` or a class label.  ``fail_under``
    holds ``METRIC=VALUE`` gates; ``batch_size`` None fits ``batch_base`` to the input size.
    ``command`` is the command line the report records."""

    target: str | None = None
    save_adversarial: str | None = None
    examples: str | None = None
    workers: int = 1
    resume: bool = False
    command: str = "advaudit attack"


@dataclass(frozen=True)
class AttackPlan:
    """The resolved work every rank runs: attacks (and whether they cascade), budgets, batch size."""

    choices: tuple[AttackChoice, ...]
    cascade: bool
    eps: tuple[float, ...]
    batch_size: int


@dataclass
class AttackResult(RunRecord):
    """An attack run and what its report says about the model and data it ran on."""

    kind: ClassVar[str] = "attack"

    run: AttackRun
    artifacts: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """``clean_accuracy``, ``robust_accuracy`` (largest eps), ``robust_accuracy@EPS``, ``success_rate``."""
        run = self.run
        m: dict[str, Any] = {"clean_accuracy": run.clean_accuracy, "robust_accuracy": run.robust_accuracy}
        for e, v in run.robust_by_eps.items():
            m[f"robust_accuracy@{e:g}"] = v
        clean = run.clean_accuracy
        m["success_rate"] = (clean - run.robust_accuracy) / clean if clean else 0.0
        return m

    def to_report(self) -> dict[str, Any]:
        """The JSON report (schema ``advaudit.report/1``, kind ``attack``) ``--report`` writes."""
        run = self.run
        return {
            **self.report_start("attack"),
            "norm": run.norm,
            "eps": run.eps,
            "targeted": run.targeted,
            "clean_accuracy": run.clean_accuracy,
            "results": run.results(),
            "robust_accuracy": run.robust_accuracy,
            "robust_accuracy_by_eps": {f"{e:g}": v for e, v in run.robust_by_eps.items()},
            "verified_adversarial": {f"{e:g}": int((run.adv_by[e] >= 0).sum()) for e in run.eps},
            "warnings": run.warnings,
            "gates": self.gates,
            "passed": self.passed,
        }


def attack(options: AttackOptions, ctx: JobContext | None = None) -> AttackResult:
    """Attack ``options.model`` on ``options.data``; write the report (checkpointed beside it, see
    :mod:`advaudit.checkpoint`) and the artefacts asked for.  Only rank 0 writes files."""
    ctx = ctx or JobContext()
    gates = [parse_gate(g) for g in options.fail_under]
    choices, cascade = resolve_choices(options.suite, options.attacks)
    ctx.log(f"loading {options.model.path} ...")
    model, data = open_inputs(options.model, options.data, ctx)
    assert data is not None and data.y is not None
    eps = resolve_eps(model, list(options.eps), options.norm)
    build_attacks(choices, model, options.norm, options.target is not None)  # bad names/params fail before work
    plan = AttackPlan(tuple(choices), cascade, tuple(eps),
                      batch_size_for(options.batch_size, model.input_shape, options.batch_base))
    ctx.log(
        f"{len(data)} samples, attacks: {', '.join(str(c) for c in choices)}" + (" (cascade)" if cascade else "")
        + f", {options.norm} eps {', '.join(f'{e:g}' for e in eps)}, batch size {plan.batch_size}"
    )
    ckpt = _checkpoint(options, plan, model, data, ctx)
    if options.workers > 1:
        ctx.log(f"sharding over {options.workers} worker processes")
    run: AttackRun | None
    if ctx.shard is not None:
        run = _rank(options, plan, (model, data), ckpt, ctx.progress, shard=ctx.shard)
    else:
        prepared = (model, data) if options.workers == 1 else None  # spawned workers load their own
        progress = ctx.progress if options.workers == 1 else None
        run = run_sharded(_rank, options.workers, options, plan, prepared, ckpt, progress)
    assert run is not None
    meta = new_meta()
    if ckpt is not None and options.resume:
        meta["resumed_units"] = ckpt.available
    result = AttackResult(
        run=run, model=model_section(model, search=True), data={**data.dataset.describe()}, command=options.command,
        seed=options.seed, gates=evaluate_gates(gates, run.clean_accuracy, run.robust_by_eps), meta=meta,
    )
    if is_main_process() and (ctx.shard is None or ctx.shard.is_main):
        _write(options, plan, result, model, ctx)
    if ckpt is not None:
        ckpt.finish()
    return result


def _checkpoint(options: AttackOptions, plan: AttackPlan, model: Model, data: PreparedData,
                ctx: JobContext) -> Checkpoint | None:
    """The run's checkpoint beside ``options.report`` (None without a report); only rank 0 writes."""
    if not options.report:
        return None
    inputs = make_inputs(
        "attack", model, fingerprint_options(options, plan.batch_size), options.seed,
        data=data_inputs(options.data.path, data.view, data.y), attacks=[str(c) for c in plan.choices],
        cascade=plan.cascade, eps=list(plan.eps),
    )
    return Checkpoint.open(options.report, "attack", inputs, resume=options.resume, writer=is_main_process(),
                           log=ctx.log)


def fingerprint_options(options: AttackOptions, batch_size: int) -> dict[str, Any]:
    """The options part of the checkpoint fingerprint, under the names ``advaudit attack``'s
    options have always had there (so checkpoints of earlier versions stay valid); options that do
    not change results are left out by :func:`advaudit.checkpoint.options_for_fingerprint`."""
    m, d = options.model, options.data
    return {
        "suite": options.suite, "attack_args": options.attacks, "eps": options.eps, "norm": options.norm,
        "targeted": options.target is not None, "target": options.target, "defense_args": (), "adaptive": None,
        "eot": 10, "eval_draws": None, "precision": m.precision, "value_range": m.range, "mean": m.mean,
        "std": m.std, "layout": m.layout, "input_shape": m.input_shape, "device": m.device,
        "data_format": d.format, "n": d.n, "offset": d.offset, "seed": d.seed, "resize": d.resize, "crop": d.crop,
        "batch_size": batch_size,
    }


def _rank(
    options: AttackOptions, plan: AttackPlan, prepared: tuple[Model, PreparedData] | None,
    ckpt: Checkpoint | None, progress: Progress | None, *, shard: Shard,
) -> AttackRun:
    """One rank's share of the attack (all of it in one process); every rank returns the whole run.

    ``prepared``: the model and data already open in this process (None: a spawned worker opens
    them on its device); ``ckpt``: every rank reuses its units, rank 0 alone saves new ones."""
    if prepared is None:
        model, data = open_inputs(options.model, options.data, JobContext(), device=shard.device(options.model.device))
        assert data is not None
    else:
        model, data = prepared
    assert data.y is not None
    keep = options.save_adversarial or options.examples or ckpt is not None
    return run_attacks(
        model, data.view, data.y, list(plan.choices), list(plan.eps), norm=options.norm, cascade=plan.cascade,
        target=options.target, batch_size=plan.batch_size, seed=options.seed,
        progress=progress if shard.is_main else None, shard=shard,
        units=None if ckpt is None else AttackUnits(ckpt.for_rank(shard.is_main)),
        keep_adversarial="largest" if keep else "none",
    )


def _write(options: AttackOptions, plan: AttackPlan, result: AttackResult, model: Model, ctx: JobContext) -> None:
    """Write the report and the artefacts asked for, and record their paths in ``result.artifacts``."""
    if options.report:
        write_json(options.report, result.to_report())
        ctx.log(f"wrote report {options.report}")
    if options.save_adversarial:
        path = save_adversarial(options.save_adversarial, result.run, list(plan.choices))
        result.artifacts["adversarial"] = str(path)
        ctx.log(f"wrote adversarial examples {options.save_adversarial}")
    if options.examples:
        path = example_grid_for_run(options.examples, result.run, model.spec.class_names, model.spec.range)
        result.artifacts["examples"] = str(path)
        ctx.log(f"wrote examples {options.examples}")

