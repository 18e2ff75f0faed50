"""The audit's steps: each runs one command's work through the Python API and returns the same
report that command's ``--report`` writes, the step's flat metrics and the files it left.

A step is a pure function of (model, step config, seed, data): the audit runner decides what to
skip on ``--resume`` and where files go.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..progress import Progress
from ..data import load_data
from ..errors import DataError, UsageError
from ..jobs.attack import AttackOptions, attack
from ..jobs.base import DataOptions, JobContext, ModelOptions
from ..jobs.defend import DefendOptions, defend
from ..jobs.detect_evaluate import DetectEvaluateOptions, detect_evaluate
from ..jobs.harden import HardenOptions, harden
from ..jobs.repair import RepairOptions, repair
from ..models import Model



@dataclass
class StepContext:
    """What every step gets: the model, the seed, where its files go, and the audit's command."""

    model: Model
    seed: int
    command: str
    artifacts_dir: Path  # this step's folder, inside the report folder
    report_dir: Path
    batch_size: int = 256
    progress: Progress | None = None
    shard: Any = None  # advaudit.distributed.Shard for the attack and detect steps
    earlier: dict[str, dict[str, Any]] = field(default_factory=dict)  # finished steps by name


@dataclass
class StepResult:
    report: dict[str, Any]
    metrics: dict[str, Any]
    artifacts: dict[str, str]  # name -> path relative to the report folder


def _rel(ctx: StepContext, path: Path) -> str:
    """An artefact's path as the report records it: relative to the report folder, else as given."""
    try:
        return path.resolve().relative_to(ctx.report_dir.resolve()).as_posix()
    except ValueError:  # an ``out`` outside the report folder
        return str(path)


def _model_options(ctx: StepContext) -> ModelOptions:
    """Options naming the audit's model (the step runs on ``ctx.model``, lent through the JobContext)."""
    return ModelOptions(path=str(ctx.model.path))


def _data_options(ctx: StepContext, step: dict[str, Any]) -> DataOptions:
    """The step's data: ``n`` samples after ``offset``, a stratified sample drawn with the audit's seed."""
    return DataOptions(path=str(step["data"]), n=step.get("n"), offset=step.get("offset", 0), seed=ctx.seed,
                       labels=step.get("labels"), resize=step.get("resize"), crop=step.get("crop"))


def _eps_option(step: dict[str, Any]) -> tuple[float, ...]:
    """``eps`` of a step: one number or a list (none: the job's default)."""
    eps = step.get("eps")
    return (eps,) if isinstance(eps, (int, float)) else tuple(eps or ())


def attack_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    """The attack job on the audit's model; examples and adversarial examples kept by default."""
    folder = ctx.artifacts_dir
    options = AttackOptions(
        model=_model_options(ctx), data=_data_options(ctx, step), suite=step.get("suite"),
        attacks=tuple(step.get("attacks") or ()), eps=_eps_option(step), norm=step.get("norm", AttackOptions.norm),
        target=None if step.get("target") is None else str(step["target"]),
        save_adversarial=str(folder / "adversarial.npz") if step.get("save_adversarial", True) else None,
        examples=str(folder / "examples.png") if step.get("examples", True) else None,
        batch_size=step.get("batch_size"), batch_base=ctx.batch_size, seed=ctx.seed, command=ctx.command,
    )
    result = attack(options, JobContext(progress=ctx.progress, shard=ctx.shard, model=ctx.model))
    artifacts: dict[str, str] = {name: _rel(ctx, Path(result.artifacts[name])) for name in ("examples", "adversarial")
                 if name in result.artifacts}
    return StepResult(result.to_report(), result.metrics(), artifacts)


def defense_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    """The defence-evaluation job on the audit's model."""
    options = DefendOptions(
        model=_model_options(ctx), data=_data_options(ctx, step), defenses=tuple(step["defenses"]),
        suite=step.get("suite"), attacks=tuple(step.get("attacks") or ()), eps=_eps_option(step),
        norm=step.get("norm", DefendOptions.norm), adaptive=step.get("adaptive", DefendOptions.adaptive),
        eot=step.get("eot", DefendOptions.eot), eval_draws=step.get("eval_draws"), batch_size=step.get("batch_size"),
        batch_base=ctx.batch_size, seed=ctx.seed, command=ctx.command,
    )
    result = defend(options, JobContext(progress=ctx.progress, model=ctx.model))
    return StepResult(result.to_report(), result.metrics(), {})


def _paths(value: str | list[str] | None) -> tuple[str, ...]:
    """A step option that takes one path or a list of them."""
    return () if value is None else (str(value),) if isinstance(value, str) else tuple(map(str, value))


def scan_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    """The scan job on the audit's model; trigger PNGs (unless ``triggers: false``) in the step's folder."""
    from ..jobs.scan import ScanOptions, scan_backdoor

    data = None
    if "data" in step:
        data = DataOptions(path=str(step["data"]), labels=step.get("labels"), n=step.get("n"),
                           offset=step.get("offset", 0), seed=ctx.seed, resize=step.get("resize"),
                           crop=step.get("crop"))
    folder = ctx.artifacts_dir / "triggers"
    options = ScanOptions(
        model=ModelOptions(path=str(ctx.model.path)), data=data, method=step.get("method", ScanOptions.method),
        steps=step.get("steps"), batch_size=step.get("batch_size"), alpha=step.get("alpha", ScanOptions.alpha),
        combine=step.get("combine", ScanOptions.combine),
        nc_rule=step.get("nc_rule"),
        min_ratio=step.get("min_ratio"), reference=_paths(step.get("reference")),
        target_labels=None if step.get("target_labels") is None else tuple(step["target_labels"]),
        triggers_dir=str(folder) if step.get("triggers", True) else None, seed=ctx.seed, command=ctx.command,
    )
    result = scan_backdoor(options, JobContext(progress=ctx.progress, model=ctx.model))
    report = result.to_report()
    artifacts = {}
    if result.triggers_dir is not None:
        artifacts["triggers_dir"] = _rel(ctx, folder)
        artifacts["triggers_overview"] = _rel(ctx, folder / "overview.png")
        report["triggers_dir"] = artifacts["triggers_dir"]
    return StepResult(report, result.metrics(), artifacts)


def detect_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    """``detect evaluate`` on the step's clean data against an earlier attack step's adversarial
    examples (or an .npz), through :func:`advaudit.jobs.detect_evaluate.detect_evaluate`."""
    source = step["adversarial"]
    if source in ctx.earlier:
        rel = ctx.earlier[source]["artifacts"].get("adversarial")
        if rel is None:
            raise DataError(f"step {source!r} kept no adversarial examples", "leave save_adversarial on in that step")
        adv_path = ctx.report_dir / rel
    else:
        adv_path = Path(source)
    if len(load_data(adv_path)) == 0:
        raise DataError(
            f"no adversarial examples to detect ({source} found none)",
            "attack at a larger eps, or remove the detect step for a model no attack fools",
        )
    lcr: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in step.items()
           if k in ("method", "mutation", "radius", "lcr_mutations", "alpha", "beta", "mu", "max_mutations")}
    roc = ctx.artifacts_dir / "roc.png"
    options = DetectEvaluateOptions(
        model=ModelOptions(path=str(ctx.model.path)),
        clean=_data_options(ctx, step),
        adversarial=str(adv_path), calibration=step.get("calibration"), roc=str(roc), seed=ctx.seed,
        command=ctx.command, adversarial_source=source, **lcr,
    )
    result = detect_evaluate(options, JobContext(model=ctx.model))
    if result is None:  # a helper rank of a sharded audit: rank 0 reports
        return StepResult({}, {}, {})
    return StepResult(result.to_report(), result.metrics(), {"roc": _rel(ctx, roc)})


def harden_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    """The harden job on the audit's model: train on ``data``, evaluate before and after on
    ``eval_data`` (default: ``data``), the hardened model (in the model's format) in the step's folder."""
    train = _data_options(ctx, step)
    # as ``advaudit harden``: --eval-n / --eval-offset select from the evaluation data (default: all of it)
    evaluation = replace(train, path=str(step.get("eval_data", step["data"])), n=step.get("eval_n"),
                         offset=step.get("eval_offset", 0))
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    hardened = ctx.artifacts_dir / f"hardened{ctx.model.path.suffix}"
    keys = ("method", "epochs", "steps", "step_size", "lr", "optimizer", "schedule", "ramp", "beta", "shift",
            "train_batch")
    options = HardenOptions(
        model=ModelOptions(path=str(ctx.model.path), device=str(ctx.model.device)), train=train, eval=evaluation,
        eps=float(step["eps"]), eval_suites=tuple(step.get("eval_suites") or HardenOptions.eval_suites),
        out=str(hardened), batch_size=step.get("batch_size"), batch_base=ctx.batch_size, seed=ctx.seed,
        command=ctx.command, **{k: step[k] for k in keys if k in step},
    )
    result = harden(options, JobContext(progress=ctx.progress, model=ctx.model))
    return StepResult(result.to_report(), result.metrics(), {"hardened": _rel(ctx, hardened)})


def repair_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    """The repair job on the audit's model: Neural Cleanse on ``data`` (or the labels of the earlier
    scan-backdoor step named by ``scan``), unlearning on ``data``, before and after on ``eval_data``; the
    repaired model (in the model's format) in the step's folder or at ``out``, none when the scan finds
    nothing to repair."""
    data = _data_options(ctx, step)
    # as ``advaudit repair``: --eval-n selects from the evaluation data (default: all of it)
    evaluation = replace(data, path=str(step["eval_data"]), n=step.get("eval_n"), offset=0)
    repaired = Path(step["out"]) if "out" in step else ctx.artifacts_dir / f"repaired{ctx.model.path.suffix}"
    inputs = (ctx.model.path, Path(step["data"]), Path(step["eval_data"]))
    if repaired.resolve() in {p.resolve() for p in inputs}:
        raise UsageError(f"out {repaired} is also an input of the step", "give another path, or leave out unset")
    repaired.parent.mkdir(parents=True, exist_ok=True)
    keys = ("scan_n", "rounds", "min_rounds", "reversals", "keep_below", "epochs", "lr", "ratio", "train_batch")
    # ``scan``: an earlier scan-backdoor step of this audit (same model) names the labels
    targets = None if "scan" not in step else tuple(ctx.earlier[step["scan"]]["report"]["suspected_targets"])
    options = RepairOptions(
        model=ModelOptions(path=str(ctx.model.path), device=str(ctx.model.device)), data=data, eval=evaluation,
        out=str(repaired), target_labels=None if step.get("target_labels") is None else tuple(step["target_labels"]),
        targets=targets,
        seed=ctx.seed, command=ctx.command, **{k: step[k] for k in keys if k in step},
    )
    result = repair(options, JobContext(progress=ctx.progress, model=ctx.model))
    artifacts = {"repaired": _rel(ctx, repaired)} if result.repaired is not None else {}
    return StepResult(result.to_report(), result.metrics(), artifacts)


RUNNERS: dict[str, Callable[[StepContext, dict[str, Any]], StepResult]] = {
    "attack": attack_step, "defense": defense_step, "scan-backdoor": scan_step, "detect": detect_step,
    "harden": harden_step, "repair": repair_step,
}
