"""The audit's steps: each runs one command's work through the Python API and returns the same
report that command's ``--report`` writes, the step's flat metrics and the files it left.

A step is a pure function of (model, step config, seed, data): the audit runner decides what to
skip on ``--resume`` and where files go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..backdoor.images import write_trigger_pngs
from ..backdoor.scan import method_names, scan_model
from ..data import PreparedData, default_batch_size, load_data, prepare
from ..detect.evaluate import adversarial_groups, evaluate_held_out, roc_png
from ..detect.lcr import DEFAULT_MUTATION, Calibration, Mutation
from ..errors import DataError
from ..models import Model
from ..jobs.attack import AttackOptions, attack
from ..jobs.base import DataOptions, JobContext, ModelOptions
from ..jobs.defend import DefendOptions, defend
from ..report.backdoor_report import scan_report
from ..report.normalize import detect_evaluate_metrics, scan_metrics
from ..report.detect_report import detect_evaluate_report

Progress = Callable[[str, int, int], None]


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


def _data(ctx: StepContext, step: dict[str, Any]) -> PreparedData:
    shape = ctx.model.input_shape
    channels = shape[0] if shape is not None and len(shape) == 3 and shape[0] in (1, 3) else None
    ds = load_data(step["data"], n=step.get("n"), offset=step.get("offset", 0), seed=ctx.seed,
                   labels_path=step.get("labels"), resize=step.get("resize"), crop=step.get("crop"), channels=channels)
    return prepare(ds, ctx.model)


def _batch_size(ctx: StepContext, step: dict[str, Any], base: int | None = None) -> int:
    """The step's (or the config's) batch_size, else ``base`` (default: the audit's) fitted to the
    model's input size (:func:`advaudit.data.default_batch_size`; unchanged up to 32768 values)."""
    if "batch_size" in step:
        return int(step["batch_size"])
    return default_batch_size(ctx.model.input_shape, ctx.batch_size if base is None else base)


def _rel(ctx: StepContext, path: Path) -> str:
    return path.relative_to(ctx.report_dir).as_posix()


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
    artifacts = {name: _rel(ctx, Path(result.artifacts[name])) for name in ("examples", "adversarial")
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


def scan_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    model = ctx.model
    methods = method_names(step.get("method", "neural-cleanse"))
    params: dict[str, dict[str, Any]] = {m: {} for m in methods}
    if "steps" in step:
        for m in methods:
            params[m]["steps"] = step["steps"]
    data = _data(ctx, {**step, "n": step.get("n", 300)}) if "data" in step else None
    if "neural-cleanse" in params:  # after the data: a TorchScript model learns its input shape from it
        params["neural-cleanse"]["batch_size"] = _batch_size(ctx, step, base=32)
    scan = scan_model(
        model, None if data is None else data.x, None if data is None else data.y,
        methods=methods, params=params, seed=ctx.seed, progress=ctx.progress,
    )
    report = scan_report(scan, model, data, ctx.command, ctx.seed)
    artifacts = {}
    prim = scan.primary
    if step.get("triggers", True) and prim.masks is not None and prim.patterns is not None:
        folder = ctx.artifacts_dir / "triggers"
        write_trigger_pngs(
            folder, prim.masks, prim.patterns, model.spec.range,
            l1=[c.mask_l1 or 0.0 for c in prim.classes], flagged=[c.flagged for c in prim.classes],
        )
        artifacts["triggers_dir"] = _rel(ctx, folder)
        artifacts["triggers_overview"] = _rel(ctx, folder / "overview.png")
        report["triggers_dir"] = artifacts["triggers_dir"]
    return StepResult(report, scan_metrics(report), artifacts)


def detect_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    model = ctx.model
    source = step["adversarial"]
    if source in ctx.earlier:
        rel = ctx.earlier[source]["artifacts"].get("adversarial")
        if rel is None:
            raise DataError(f"step {source!r} kept no adversarial examples", "leave save_adversarial on in that step")
        adv_path = ctx.report_dir / rel
    else:
        adv_path = Path(source)
    adv = prepare(load_data(adv_path), model, need_labels=False)
    if len(adv) == 0:
        raise DataError(
            f"no adversarial examples to detect ({source} found none)",
            "attack at a larger eps, or remove the detect step for a model no attack fools",
        )
    groups = adversarial_groups(adv_path, len(adv))
    clean = _data(ctx, step)
    assert clean.y is not None
    cal = None
    if "calibration" in step:
        cal = Calibration.load(step["calibration"])
        cal.check_for(model)
    mutation = Mutation.parse(step.get("mutation", DEFAULT_MUTATION), step.get("radius")).check()
    sprt = {k: step[k] for k in ("alpha", "beta", "mu", "max_mutations") if k in step}
    ev, _, _ = evaluate_held_out(
        model, clean.view, clean.y, adv.view, groups, cal, mutation, n_lcr=step.get("lcr_mutations", 200),
        seed=ctx.seed, shard=ctx.shard, **sprt,
    )
    report = detect_evaluate_report(ev, model, clean, ctx.command, ctx.seed, adversarial={"source": source, "n": int(len(adv))})
    if ctx.shard is not None and not ctx.shard.is_main:
        return StepResult(report, detect_evaluate_metrics(report), {})
    roc = ctx.artifacts_dir / "roc.png"
    roc_png(str(roc), ev.fpr, ev.tpr, f"LCR ROC, AUROC {ev.figures['auroc_all']:.4f}")
    return StepResult(report, detect_evaluate_metrics(report), {"roc": _rel(ctx, roc)})


RUNNERS: dict[str, Callable[[StepContext, dict[str, Any]], StepResult]] = {
    "attack": attack_step, "defense": defense_step, "scan-backdoor": scan_step, "detect": detect_step,
}
