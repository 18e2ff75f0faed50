"""The ``detect evaluate`` job: how well a detector tells clean inputs from adversarial ones.

LCR reports kappa per attack (Table 3 of paper 002), AUROC and the SPRT's precision / recall / cost;
its chunks are checkpointed beside ``report`` (``resume``) and shared over ``workers`` processes.
Other detectors report AUROC of their score and the figures of their decisions
(:mod:`advaudit.detect.evaluate_scores`).  Without a calibration file the detector is calibrated on
the first half of the clean inputs and evaluated on the other half.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import DataError, UsageError
from .base import DataOptions, JobContext, ModelOptions, open_inputs
from .detect import LCR, build_detector

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from ..data import PreparedData
    from ..detect.evaluate import Evaluation
    from ..distributed import Shard
    from ..models import Model

NOT_FINGERPRINTED = ("report", "resume", "workers", "roc", "command", "adversarial_source")
"""Options that do not change the figures (outputs, how the work is spread, what the report records)."""


@dataclass(frozen=True, kw_only=True)
class DetectEvaluateOptions:
    """``advaudit detect evaluate``: ``clean`` labelled data against the ``adversarial`` .npz.

    ``report`` is written by the job, which keeps its checkpoint beside it until then (``resume``
    continues an interrupted run); ``adversarial_source``
    (the audit) adds an ``adversarial`` section naming where the examples came from."""

    model: ModelOptions
    clean: DataOptions
    adversarial: str
    calibration: str | None = None
    method: str = "lcr"
    mutation: str = LCR.mutation
    radius: str | float | tuple[float, ...] | None = LCR.radius
    lcr_mutations: int = LCR.n_mutations
    alpha: float = LCR.alpha
    beta: float = LCR.beta
    mu: float = LCR.mu
    sigma: float | None = LCR.sigma
    max_mutations: int = LCR.max_mutations
    roc: str | None = None
    report: str | None = None
    resume: bool = False
    workers: int = 1
    seed: int = 0
    command: str = "advaudit"
    adversarial_source: str | None = None


@dataclass
class DetectEvaluateResult:
    """The evaluation's figures and ROC curve, and the report's model and data sections."""

    kind: ClassVar[str] = "detect-evaluate"

    method: str
    ev: Evaluation
    model: dict[str, Any]
    data: dict[str, Any]
    adversarial: dict[str, Any] | None = None
    resumed_units: int | None = None
    envelope: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """AUROC (all, mean, per attack) and the decisions' precision, recall, false positives, cost."""
        f = self.ev.figures
        m: dict[str, Any] = {"auroc": f["auroc_all"], "auroc_mean": f["auroc_mean"]}
        m.update({f"auroc@{g}": v for g, v in f["auroc"].items()})
        if self.method == "lcr":
            s = f["sprt"]
            m.update({"sprt_precision": s["precision"], "sprt_recall": s["recall"],
                      "sprt_false_positive_rate": s["false_positive_rate"], "ms_per_input": s["ms_per_input"]})
        else:
            d = f["decisions"]
            m.update({k: d[k] for k in ("precision", "recall", "false_positive_rate", "ms_per_input")})
        return m

    @property
    def passed(self) -> bool:
        """An evaluation has no gate."""
        return True

    def to_report(self) -> dict[str, Any]:
        """The ``detect-evaluate`` report: figures and the thinned ROC curve."""
        from ..report.roc import downsample_roc

        report = {**self.envelope, "meta": dict(self.envelope.get("meta", {}))}
        extra = {} if self.adversarial is None else {"adversarial": self.adversarial}
        report.update({"kind": "detect-evaluate", "model": self.model, "data": self.data, **extra,
                       **self.ev.figures, "roc": downsample_roc(self.ev.fpr, self.ev.tpr)})
        if self.resumed_units is not None:
            report["meta"]["resumed_units"] = self.resumed_units
        return report

    def roc_title(self) -> str:
        """Title of the ROC curve PNG."""
        name = "LCR" if self.method == "lcr" else self.method
        return f"{name} ROC, AUROC {self.ev.figures['auroc_all']:.4f}"


Inputs = tuple["Model", "PreparedData", "PreparedData", np.ndarray, Any]


def evaluate_inputs(options: DetectEvaluateOptions, ctx: JobContext, shard: Shard | None = None) -> Inputs:
    """Model, clean data, adversarial data, their groups, and the calibration file if one is given."""
    from ..data import load_data, prepare
    from ..detect.base import load_calibration, parse_method
    from ..detect.evaluate import adversarial_groups

    device = None if shard is None else shard.device(options.model.device)
    model, clean = open_inputs(options.model, options.clean, ctx, device=device)
    assert clean is not None
    adv = prepare(load_data(options.adversarial, max_values=options.clean.max_input_pixels), model,
                  need_labels=False)
    if len(adv) == 0:
        raise DataError(f"{Path(options.adversarial).name} holds no adversarial examples")
    groups = adversarial_groups(options.adversarial, len(adv))
    cal = None
    if options.calibration:
        method, cal = load_calibration(options.calibration)
        if method != parse_method(options.method)[0]:
            raise UsageError(f"{options.calibration} is a {method} calibration, not {parse_method(options.method)[0]}",
                             f"evaluate with --method {method}, or leave --calibration out")
        cal.check_for(model)
    return model, clean, adv, groups, cal


def _fingerprint_options(options: DetectEvaluateOptions) -> dict[str, Any]:
    """The options whose values change the figures, flat (model and data fields by their own names)."""
    rest = {k: v for k, v in asdict(options).items() if k not in (*NOT_FINGERPRINTED, "model", "clean")}
    return {**asdict(options.model), **{f"clean_{k}": v for k, v in asdict(options.clean).items()}, **rest}


def _open_checkpoint(options: DetectEvaluateOptions, inputs: Inputs, ctx: JobContext) -> Checkpoint | None:
    """The checkpoint beside ``report`` (LCR only; None without a report); only rank 0 writes."""
    from ..checkpoint import Checkpoint, data_inputs, make_inputs
    from ..distributed import is_main_process
    from ..models.base import sha256_file

    if not options.report or options.method != "lcr":
        return None
    model, clean, adv, groups, _ = inputs
    fingerprint = make_inputs(
        "detect-evaluate", model, _fingerprint_options(options), options.seed,
        data=data_inputs(options.clean.path, clean.view, clean.y),
        adversarial=data_inputs(options.adversarial, adv.view, groups.astype(str)),
        calibration=sha256_file(options.calibration) if options.calibration else None,
    )
    return Checkpoint.open(options.report, "detect-evaluate", fingerprint, resume=options.resume,
                           writer=is_main_process(), log=ctx.log)


def detect_evaluate(options: DetectEvaluateOptions, ctx: JobContext | None = None) -> DetectEvaluateResult | None:
    """Evaluate the detector; sharded over ``workers`` processes (or the ranks of torchrun).  Returns
    None on ranks other than the main one, which only help compute."""
    from ..distributed import is_main_process, run_sharded
    from ..report.writer import base_report, model_section, write_json

    ctx = ctx or JobContext()
    build_detector(options.method, options)  # a bad method or option fails before any loading
    inputs = evaluate_inputs(options, ctx)  # bad input fails here, before any worker starts
    model, clean, adv, _, _ = inputs
    ckpt = _open_checkpoint(options, inputs, ctx)
    if options.workers > 1:
        ctx.log(f"sharding over {options.workers} worker processes")
    local = inputs if options.workers == 1 else None
    out = run_sharded(evaluate_rank, options.workers, options, local, ckpt)
    if not is_main_process():
        return None
    assert out is not None
    ev, note = out
    if note:
        ctx.log(note)
    source = None if options.adversarial_source is None else {"source": options.adversarial_source, "n": len(adv)}
    result = DetectEvaluateResult(
        options.method.split(":", 1)[0], ev, model_section(model), clean.dataset.describe(), source,
        ckpt.available if ckpt is not None and options.resume else None,
        base_report(options.command, options.seed),
    )
    if options.roc:
        from ..detect.evaluate import roc_png

        roc_png(options.roc, ev.fpr, ev.tpr, result.roc_title())
        ctx.log(f"wrote {options.roc}")
    if options.report:
        write_json(options.report, result.to_report())
        ctx.log(f"wrote report {options.report}")
    if ckpt is not None:
        ckpt.finish()  # only once the report is written: a kill before keeps the finished chunks
    return result


def evaluate_rank(
    options: DetectEvaluateOptions, inputs: Inputs | None = None, ckpt: Checkpoint | None = None, *, shard: Shard,
) -> tuple[Evaluation, str | None]:
    """One rank's share of the evaluation (all of it in one process); every rank returns the figures,
    and the line saying how the detector was calibrated when it was calibrated on half the clean data.

    ``ckpt``: the run's checkpoint; every rank reuses its chunks, rank 0 alone saves new ones."""
    from ..checkpoint import ChunkUnits
    from ..data.views import take_rows
    from ..detect.evaluate import evaluate_held_out
    from ..detect.evaluate_scores import evaluate_detector, held_out
    from ..detect.lcr import LCRDetector

    model, clean, adv, groups, cal = inputs if inputs is not None else evaluate_inputs(options, JobContext(), shard)
    detector = build_detector(options.method, options)
    if not isinstance(detector, LCRDetector):
        cal, half = held_out(detector, model, clean.view, clean.y, cal, seed=options.seed)
        ev = evaluate_detector(detector, model, take_rows(clean.view, slice(half, None)), adv.view, groups, cal,
                               seed=options.seed)
        what = f"threshold {cal.threshold:.4f}"
    else:
        assert clean.y is not None
        units = None if ckpt is None else ChunkUnits(ckpt.for_rank(shard.is_main))
        ev, cal, half = evaluate_held_out(
            model, clean.view, clean.y, adv.view, groups, cal, detector.parsed_mutation(),
            n_lcr=options.lcr_mutations, seed=options.seed, shard=shard, alpha=options.alpha, beta=options.beta,
            mu=options.mu, sigma=options.sigma, max_mutations=options.max_mutations, units=units,
        )
        what = f"kappa_nor {cal.kappa_nor:.4f}"
    note = f"calibrated on {half} clean inputs: {what}; evaluated on the other {len(clean) - half}" if half else None
    return ev, note
