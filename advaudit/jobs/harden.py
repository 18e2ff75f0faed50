"""The ``harden`` job: adversarially fine-tune a model, export it in its own format, and audit it
before and after with the attack suites.

The whole workflow (evaluate, train, export, reload, evaluate, report) runs here, so ``advaudit
harden``, the audit's ``harden`` step and Python callers run the same code.  The training
hyperparameters default to :class:`~advaudit.harden.train.HardenConfig`'s, the one place they live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from ..errors import UsageError
from ..harden.api import check_inputs
from ..harden.api import harden as train_hardened
from ..harden.evaluate import evaluate_suites
from ..harden.export import export_hardened
from ..harden.train import EpochStats, HardenConfig
from ..report.writer import model_section, write_json
from .base import DataOptions, JobContext, JobOptions, Ungated, batch_size_for, new_meta, open_inputs, report_head

EVAL_SUITES = ("quick", "standard")
"""The suites of the before/after table."""


@dataclass(frozen=True, kw_only=True)
class HardenOptions(JobOptions):
    """Everything a harden run depends on.

    ``train`` is the training data, ``eval`` the data of the before/after evaluation (at L-inf
    ``eps``, with ``eval_suites``).  ``steps`` None: 10 (fgsm-rs: 1); ``step_size`` None: 2.5 eps/K
    (fgsm-rs: 1.25 eps).  ``out`` None writes ``MODEL-hardened<suffix>`` in the working folder.
    ``model.precision`` is the training arithmetic and the attacks' search precision.  ``batch_size``
    (evaluation) None fits ``batch_base`` to the input size; ``train_batch`` is the training batch."""

    train: DataOptions
    eval: DataOptions
    eps: float
    method: str = HardenConfig.method
    epochs: int = HardenConfig.epochs
    steps: int | None = HardenConfig.steps
    step_size: float | None = HardenConfig.step_size
    lr: float = HardenConfig.lr
    optimizer: str = HardenConfig.optimizer
    schedule: str = HardenConfig.schedule
    ramp: float = HardenConfig.ramp
    beta: float = HardenConfig.beta
    shift: int = HardenConfig.shift
    train_batch: int = HardenConfig.batch_size
    eval_suites: tuple[str, ...] = EVAL_SUITES
    out: str | None = None
    batch_size: int | None = None
    batch_base: int = 256
    command: str = "advaudit harden"


@dataclass
class HardenResult(Ungated):
    """Before/after figures of a harden run, its training record and the exported model."""

    kind: ClassVar[str] = "harden"

    model: dict[str, Any]
    hardened: dict[str, Any]
    train_data: dict[str, Any]
    eval_data: dict[str, Any]
    eps: float
    method: str
    config: dict[str, Any]
    history: list[dict[str, Any]]
    suites: list[str]
    before: dict[str, Any]
    after: dict[str, Any]
    command: str
    seed: int
    meta: dict[str, Any] = field(default_factory=new_meta)

    def summary(self) -> list[dict[str, Any]]:
        """One row per figure: clean accuracy, then robust accuracy per suite, before, after, change."""
        before, after = self.before, self.after
        rows = [{"metric": "clean_accuracy", "suite": None, "before": before["clean_accuracy"],
                 "after": after["clean_accuracy"]}]
        rows += [{"metric": "robust_accuracy", "suite": s, "before": before["robust_accuracy"][s],
                  "after": after["robust_accuracy"][s]} for s in self.suites]
        for r in rows:
            r["change"] = r["after"] - r["before"]
        return rows

    def metrics(self) -> dict[str, Any]:
        """The hardened model's ``clean_accuracy`` and ``robust_accuracy`` (under the last, strongest
        suite), the source model's as ``clean_accuracy_before`` / ``robust_accuracy_before``, and every
        row of the table as ``clean_accuracy_before/after`` and ``robust_accuracy@SUITE_before/after``."""
        last = self.suites[-1]
        m: dict[str, Any] = {
            "clean_accuracy": self.after["clean_accuracy"], "robust_accuracy": self.after["robust_accuracy"][last],
            "clean_accuracy_before": self.before["clean_accuracy"],
            "robust_accuracy_before": self.before["robust_accuracy"][last],
        }
        for row in self.summary():
            name = row["metric"] + (f"@{row['suite']}" if row["suite"] else "")
            m[f"{name}_before"] = row["before"]
            m[f"{name}_after"] = row["after"]
        return m

    def to_report(self) -> dict[str, Any]:
        """The JSON report (schema ``advaudit.report/1``, kind ``harden``) ``--report`` writes."""
        return {
            **report_head(self.command, self.seed, self.meta),
            "kind": "harden",
            "model": self.model,
            "hardened": self.hardened,
            "train_data": self.train_data,
            "eval_data": self.eval_data,
            "norm": "linf",
            "eps": self.eps,
            "method": self.method,
            "config": self.config,
            "history": self.history,
            "suites": self.suites,
            "before": self.before,
            "after": self.after,
            "summary": self.summary(),
        }


def _format_of(suffix: str) -> str:
    """The model format a file suffix stands for: ``.onnx``, ``.pt2`` (torch.export), else TorchScript."""
    return {".onnx": "onnx", ".pt2": "torch.export"}.get(suffix, "torchscript")


def check_harden(options: HardenOptions) -> str:
    """Refuse bad hyperparameters and an output that would change the model's format or overwrite
    the model, before any work; return the path the hardened model goes to."""
    for option, value, zero_ok in (("--lr", options.lr, False), ("--step-size", options.step_size, False),
                                   ("--beta", options.beta, True), ("--ramp", options.ramp, True)):
        if value is not None and not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):  # NaN too
            raise UsageError(f"{option} must be a {'non-negative' if zero_ok else 'positive'} number, got {value:g}")
    return output_path(options.model.path, options.out, "hardened")


def output_path(model_path: str, out: str | None, tag: str) -> str:
    """Where a trained copy of the model goes: ``out``, or ``MODEL-<tag><suffix>`` in the working
    folder; refused when it would change the model's format or overwrite the model."""
    model = Path(model_path)
    out = out or f"{model.stem}-{tag}{model.suffix}"
    in_suffix, out_suffix = model.suffix.lower(), Path(out).suffix.lower()
    if _format_of(in_suffix) != _format_of(out_suffix):
        raise UsageError(f"--out {out} changes the model format",
                         f"the {tag} model keeps MODEL's format: use a {in_suffix or '.pt'} file")
    if Path(out).resolve() == model.resolve():
        raise UsageError("--out is the input model", f"write the {tag} model to a new file")
    return out


def harden(options: HardenOptions, ctx: JobContext | None = None) -> HardenResult:
    """Evaluate, adversarially train, export, reload the export and evaluate it; write the report."""
    ctx = ctx or JobContext()
    out_path = check_harden(options)
    suites = list(options.eval_suites)
    eps = options.eps
    ctx.log(f"loading {options.model.path} ...")
    model, train = open_inputs(options.model, options.train, ctx)
    test = options.eval.load(model)
    assert train is not None and train.y is not None and test.y is not None
    check_inputs(model, train.y, eps, options.method)
    check_inputs(model, test.y, eps, options.method)
    batch_size = batch_size_for(options.batch_size, model.input_shape, options.batch_base)

    ctx.log(f"before: {len(test)} evaluation samples, suites {', '.join(suites)}, linf eps {eps:g}")
    before = evaluate_suites(model, test.view, test.y, eps, suites, batch_size=batch_size, seed=options.seed,
                             progress=ctx.progress)

    ctx.log(f"training ({options.method}) on {len(train)} samples for {options.epochs} epochs ...")

    def on_epoch(s: EpochStats) -> None:
        ctx.log(f"epoch {s.epoch}/{options.epochs}: eps {s.eps:.3g} lr {s.lr:.2e} loss {s.loss:.4f} "
                f"train clean {100 * s.clean_accuracy:.1f}% adv {100 * s.adv_accuracy:.1f}% ({s.time_s:.0f} s)")

    trained = train_hardened(
        model, train.x, train.y, eps, options.method, epochs=options.epochs, steps=options.steps,
        step_size=options.step_size, lr=options.lr, batch_size=options.train_batch, seed=options.seed,
        progress=ctx.progress, on_epoch=on_epoch, optimizer=options.optimizer, schedule=options.schedule,
        ramp=options.ramp, beta=options.beta, precision=options.model.precision, shift=options.shift,
    )
    record = {"method": options.method, "eps": eps, "config": trained.config, "source_sha256": model.sha256,
              "train_data": train.dataset.describe()}
    export = export_hardened(model, trained.module, out_path, test.view[:256], record)
    ctx.log(f"wrote {out_path} (export check: max rel diff {export['max_rel_diff']:.2g})")

    hardened = replace(options.model, path=out_path).open(input_shape=model.input_shape)
    ctx.log("after: evaluating the exported model ...")
    after = evaluate_suites(hardened, test.view, test.y, eps, suites, batch_size=batch_size, seed=options.seed,
                            progress=ctx.progress)
    result = HardenResult(
        model=model_section(model),
        hardened={"path": str(hardened.path), "sha256": hardened.sha256, "format": hardened.format, "export": export},
        train_data=train.dataset.describe(), eval_data=test.dataset.describe(), eps=eps, method=options.method,
        config=trained.config, history=[s.to_dict() for s in trained.history], suites=suites, before=before,
        after=after, command=options.command, seed=options.seed,
    )
    if options.report:
        write_json(options.report, result.to_report())
        ctx.log(f"wrote report {options.report}")
    return result
