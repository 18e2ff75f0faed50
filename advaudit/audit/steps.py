"""The audit's steps: each runs one command's work through the Python API and returns the same
report that command's ``--report`` writes, the step's flat metrics and the files it left.

A step is a pure function of (model, step config, seed, data): the audit runner decides what to
skip on ``--resume`` and where files go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..attacks.runner import resolve_eps, run_attacks
from ..attacks.suites import resolve_choices
from ..data import PreparedData, default_batch_size, load_data, prepare
from ..defenses import build_stack
from ..defenses.evaluate import evaluate_defense, parse_modes
from ..errors import DataError
from ..models import Model
from ..report.artifacts import example_grid_for_run, save_adversarial
from ..report.attack_report import attack_report
from ..report.defense_report import defense_report
from ..report.normalize import attack_metrics
from ..jobs.base import DataOptions, JobContext, ModelOptions
from ..jobs.detect_evaluate import DetectEvaluateOptions, detect_evaluate

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


def _eps(model: Model, step: dict[str, Any]) -> list[float]:
    eps = step.get("eps")
    return resolve_eps(model, [eps] if isinstance(eps, (int, float)) else eps, step.get("norm", "linf"))


def attack_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    model = ctx.model
    data = _data(ctx, step)
    assert data.y is not None
    choices, cascade = resolve_choices(step.get("suite"), step.get("attacks"))
    norm = step.get("norm", "linf")
    target = step.get("target")
    keep = step.get("examples", True) or step.get("save_adversarial", True)
    run = run_attacks(
        model, data.view, data.y, choices, _eps(model, step), norm=norm, cascade=cascade,
        target=None if target is None else str(target), batch_size=_batch_size(ctx, step),
        seed=ctx.seed, progress=ctx.progress, shard=ctx.shard, keep_adversarial="largest" if keep else "none",
    )
    report = attack_report(run, model, data, ctx.command, ctx.seed, [])
    artifacts: dict[str, str] = {}
    if ctx.shard is not None and not ctx.shard.is_main:  # every rank holds the merged run; rank 0 writes
        return StepResult(report, attack_metrics(report), artifacts)
    if step.get("examples", True):
        artifacts["examples"] = _rel(ctx, example_grid_for_run(ctx.artifacts_dir / "examples.png", run, model.spec.class_names, model.spec.range))
    if step.get("save_adversarial", True):
        artifacts["adversarial"] = _rel(ctx, save_adversarial(ctx.artifacts_dir / "adversarial.npz", run, choices))
    return StepResult(report, attack_metrics(report), artifacts)


def defense_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    model = ctx.model
    stack = build_stack(step["defenses"])
    data = _data(ctx, step)
    assert model.input_shape is not None and data.y is not None
    for d in stack:
        d.fits(tuple(model.input_shape))
    choices, _ = resolve_choices(step.get("suite"), step.get("attacks"))
    ev = evaluate_defense(
        model, data.x, data.y, stack, choices, _eps(model, step), modes=parse_modes(step.get("adaptive", "all")),
        norm=step.get("norm", "linf"), eot=step.get("eot", 10), eval_draws=step.get("eval_draws"),
        batch_size=_batch_size(ctx, step), seed=ctx.seed, progress=ctx.progress,
    )
    report = defense_report(ev, model, data, ctx.command, ctx.seed, [])
    return StepResult(report, attack_metrics(report), {})


def scan_step(ctx: StepContext, step: dict[str, Any]) -> StepResult:
    """The scan job on the audit's model; trigger PNGs (unless ``triggers: false``) in the step's folder."""
    from ..jobs import DataOptions, JobContext, ModelOptions
    from ..jobs.scan import ScanOptions, scan_backdoor

    data = None
    if "data" in step:
        data = DataOptions(path=str(step["data"]), labels=step.get("labels"), n=step.get("n"),
                           offset=step.get("offset", 0), seed=ctx.seed, resize=step.get("resize"),
                           crop=step.get("crop"))
    folder = ctx.artifacts_dir / "triggers"
    options = ScanOptions(
        model=ModelOptions(path=str(ctx.model.path)), data=data, method=step.get("method", ScanOptions.method),
        steps=step.get("steps"), batch_size=step.get("batch_size"),
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
    lcr = {k: tuple(v) if isinstance(v, list) else v for k, v in step.items()
           if k in ("method", "mutation", "radius", "lcr_mutations", "alpha", "beta", "mu", "max_mutations")}
    roc = ctx.artifacts_dir / "roc.png"
    options = DetectEvaluateOptions(
        model=ModelOptions(path=str(ctx.model.path)),
        clean=DataOptions(path=str(step["data"]), labels=step.get("labels"), n=step.get("n"),
                          offset=step.get("offset", 0), seed=ctx.seed, resize=step.get("resize"), crop=step.get("crop")),
        adversarial=str(adv_path), calibration=step.get("calibration"), roc=str(roc), seed=ctx.seed,
        command=ctx.command, adversarial_source=source, **lcr,
    )
    result = detect_evaluate(options, JobContext(model=ctx.model))
    if result is None:  # a helper rank of a sharded audit: rank 0 reports
        return StepResult({}, {}, {})
    return StepResult(result.to_report(), result.metrics(), {"roc": _rel(ctx, roc)})


RUNNERS: dict[str, Callable[[StepContext, dict[str, Any]], StepResult]] = {
    "attack": attack_step, "defense": defense_step, "scan-backdoor": scan_step, "detect": detect_step,
}
