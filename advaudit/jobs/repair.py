"""The ``repair`` job: find a backdoor with Neural Cleanse, unlearn its reversed trigger, export the
repaired model in the input's format, and measure clean accuracy and attack success before and after.

``advaudit repair`` and Python callers run :func:`repair`.  The unlearning itself is
:func:`advaudit.backdoor.repair.unlearn`; the export and its checks are harden's
(:func:`advaudit.harden.export.export_hardened`).  Attack success is measured with the triggers the
scan reconstructed (the real trigger is unknown to an auditor), in the deployment runtime, on the
evaluation images not already of the target class.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import DataError, ModelError, UsageError
from .base import DataOptions, JobContext, JobOptions, Ungated, new_meta, open_inputs, report_head
from .harden import output_path

DEFAULT_SCAN_N = 300


@dataclass(frozen=True, kw_only=True)
class RepairOptions(JobOptions):
    """What a repair depends on.  ``data``: clean labelled images to scan and fine-tune on; ``eval``:
    the before/after evaluation images; ``out`` None writes ``MODEL-repaired<suffix>``; ``scan_n``:
    the images Neural Cleanse reads (stratified); ``target_labels``: scan only these labels;
    ``targets``: the labels an earlier scan found (:func:`scan_targets`; e.g. ``scan-backdoor --method
    all --reference``, whose verdict Neural Cleanse's own outlier test may not reach): their triggers
    are reversed and unlearned whatever Neural Cleanse's verdict, and an empty tuple repairs nothing;
    ``scan_report``: read ``targets`` from that scan-backdoor report (checked to scan this model);
    ``rounds``: at most this many unlearning rounds; ``min_rounds``: at least this many, whatever the
    re-reversed trigger's size (capped at ``rounds``); ``reversals``: triggers reversed per label and round
    (different random starts; more cover more of the real trigger); ``keep_below``: a trigger reversed
    again on the repaired network joins the unlearning set only if its mask L1 norm is below this share
    of the median label's (larger ones are the label's natural features); ``epochs``, ``lr``, ``ratio``,
    ``train_batch``: the unlearning (:class:`~advaudit.backdoor.repair.UnlearnConfig`)."""

    data: DataOptions
    eval: DataOptions
    out: str | None = None
    scan_n: int = DEFAULT_SCAN_N
    target_labels: tuple[int, ...] | None = None
    targets: tuple[int, ...] | None = None
    scan_report: str | None = None
    rounds: int = 3
    min_rounds: int = 2
    reversals: int = 5
    keep_below: float = 0.5
    epochs: int = 8
    lr: float = 5e-4
    ratio: float = 0.2
    train_batch: int = 64
    command: str = "advaudit repair"


@dataclass
class RepairResult(Ungated):
    """The scan, the before/after figures, the unlearning record and the exported model (None when the
    scan found nothing to repair)."""

    kind: ClassVar[str] = "repair"

    model: dict[str, Any]
    data: dict[str, Any]
    eval_data: dict[str, Any]
    scan: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any] | None
    repaired: dict[str, Any] | None
    config: dict[str, Any]
    rounds: list[dict[str, Any]]
    command: str
    seed: int
    meta: dict[str, Any] = field(default_factory=new_meta)

    def metrics(self) -> dict[str, Any]:
        """Clean accuracy and the largest reconstructed-trigger attack success, before and after (the
        names :func:`advaudit.report.normalize.repair_metrics` reads back from a report)."""
        from ..report.normalize import repair_metrics

        return repair_metrics({"before": self.before, "after": self.after})

    def to_report(self) -> dict[str, Any]:
        """The ``advaudit.report/1`` document of kind ``repair``."""
        return {
            **report_head(self.command, self.seed, self.meta), "kind": self.kind, "model": self.model,
            "data": self.data, "eval_data": self.eval_data, "scan": self.scan, "before": self.before,
            "after": self.after, "repaired": self.repaired, "config": self.config, "rounds": self.rounds,
            "metrics": self.metrics(), "gates": [], "passed": self.passed,
        }


def _figures(model: Any, x: np.ndarray, y: np.ndarray, masks: np.ndarray, patterns: np.ndarray,
             targets: np.ndarray) -> dict[str, Any]:
    """Clean accuracy and each reconstructed trigger's attack success (none without targets), in the
    deployment runtime."""
    from ..backdoor.neural_cleanse import trigger_asr

    asr = trigger_asr(model, x, y, masks, patterns, targets)
    return {"clean_accuracy": float((model.predict(x).labels == y).mean()),
            "asr": {str(int(t)): float(a) for t, a in zip(targets, asr)},
            "max_asr": float(np.nanmax(asr)) if len(asr) else None}


def repair(options: RepairOptions, ctx: JobContext | None = None) -> RepairResult:
    """Scan, unlearn in rounds, export, reload the export and measure it; write the report."""
    from ..backdoor import NeuralCleanse
    from ..backdoor.nc_schedule import Reconstruction
    from ..backdoor.neural_cleanse import reconstruct_triggers
    from ..backdoor.repair import UnlearnConfig, unlearn
    from ..data import select
    from ..harden.api import model_forward
    from ..harden.export import export_hardened
    from ..report.writer import model_section

    ctx = ctx or JobContext()
    out_path = output_path(options.model.path, options.out, "repaired")
    cfg = UnlearnConfig(epochs=options.epochs, lr=options.lr, batch_size=options.train_batch,
                        ratio=options.ratio).check()
    if min(options.min_rounds, options.rounds, options.reversals) < 1:
        raise UsageError("repair: rounds, min_rounds and reversals must be at least 1")
    if not options.keep_below >= 0:
        raise UsageError(f"repair: keep_below must be 0 or more, got {options.keep_below:g}")
    model, train = open_inputs(options.model, options.data, ctx)
    test = options.eval.load(model)
    assert train is not None and train.y is not None and test.y is not None
    if model.torch_module() is None or model.torch_batch is not None:
        raise ModelError(f"cannot repair {model.path.name}: it has no trainable differentiable twin with a dynamic "
                         f"batch ({model.gradients.note})", "give a TorchScript model or an ONNX graph onnx2torch "
                         "converts, exported with a dynamic batch dimension")
    x, y = np.asarray(train.x), train.y
    xt, yt = np.asarray(test.x), test.y
    pick = select(len(x), y, min(options.scan_n, len(x)), 0, options.seed)
    if options.scan_report is not None and options.targets is not None:
        raise UsageError("repair: give the labels to repair once (scan_report or targets)")
    given = options.targets if options.scan_report is None else scan_targets(options.scan_report, model.sha256)
    if given is not None and options.target_labels is not None:
        raise UsageError("repair: --scan gives the labels to repair; drop --target-labels")
    if given is not None and model.num_classes is not None and any(t >= model.num_classes for t in given):
        raise UsageError(f"repair: the scan's targets {list(given)} are not all labels of this "
                         f"{model.num_classes}-class model", "give the report of a scan of this model")
    ctx.log(f"scanning {model.path.name} with neural-cleanse on {len(pick)} clean images ...")
    scan = NeuralCleanse(labels=given or options.target_labels).scan(model, x[pick], y[pick], seed=options.seed,
                                                                     progress=ctx.progress)
    targets = np.asarray(scan.suspected_targets if given is None else given, dtype=np.int64)
    assert scan.masks is not None and scan.patterns is not None
    found = scan.masks[targets], scan.patterns[targets]
    masks, patterns = found
    record = {"verdict": scan.verdict, "suspected_targets": scan.suspected_targets, **scan.evidence,
              **({} if given is None else {"targets_from_scan": list(given)})}
    config = {"method": "nc-unlearning", "rounds": options.rounds, "min_rounds": options.min_rounds,
              "reversals": options.reversals, "keep_below": options.keep_below, "epochs": cfg.epochs, "lr": cfg.lr,
              "ratio": cfg.ratio, "batch_size": cfg.batch_size, "distill": cfg.distill, "scan_n": len(pick)}
    before = _figures(model, xt, yt, *found, targets)
    result = RepairResult(model=model_section(model), data=train.dataset.describe(), eval_data=test.dataset.describe(),
                          scan=record, before=before, after=None, repaired=None, config=config, rounds=[],
                          command=options.command, seed=options.seed)
    if not len(targets):
        ctx.log("the scan found no backdoor: nothing to repair, no model written")
        return _written(options, result, ctx)
    forward, original = model_forward(model), model.torch_module()
    assert original is not None
    net, median = original, float(scan.evidence["median_l1"])
    xs = torch.from_numpy(x[pick])

    def reverse(net: torch.nn.Module, labels: np.ndarray, seed: int) -> Reconstruction:
        """Neural Cleanse's search on ``net`` for ``labels`` (a label repeated: random starts, batched)."""
        return reconstruct_triggers(lambda v: forward(net, v), xs, labels, value_range=model.bounds,
                                    generator=torch.Generator().manual_seed(seed))

    if options.reversals > 1:  # more starts on the original network beside the scan's own trigger
        extra = reverse(original, np.repeat(targets, options.reversals - 1), options.seed + 1000)
        masks, patterns = np.concatenate([masks, extra.masks]), np.concatenate([patterns, extra.patterns])
    for k in range(options.rounds):
        ctx.log(f"round {k + 1}: unlearning {len(masks)} trigger(s) of label(s) {', '.join(map(str, targets))} "
                f"on {len(x)} images ...")
        done = unlearn(net, forward, x, y, masks, patterns, config=cfg, teacher=original, seed=options.seed + k,
                       progress=ctx.progress)
        net = done.module
        again = reverse(net, np.repeat(targets, options.reversals), options.seed + k + 1)
        smallest = again.l1.reshape(len(targets), options.reversals).min(axis=1)
        result.rounds.append({"round": k + 1, "history": done.history,
                              "reversed_l1": {str(int(t)): float(n) for t, n in zip(targets, smallest)}})
        ctx.log(f"round {k + 1}: smallest reversed trigger L1 now {', '.join(f'{n:.1f}' for n in smallest)} "
                f"(median label {median:.1f})")
        if k + 1 >= options.min_rounds and bool((smallest >= median).all()):
            break
        small = again.l1 < options.keep_below * median  # still the backdoor, not a natural feature
        result.rounds[-1]["added"] = int(small.sum())
        masks, patterns = np.concatenate([masks, again.masks[small]]), np.concatenate([patterns, again.patterns[small]])
    export = export_hardened(model, net, out_path, test.view[:256], {"repair": config,
                                                                     "source_sha256": model.sha256})
    ctx.log(f"wrote {out_path} (export check: max rel diff {export['max_rel_diff']:.2g})")
    repaired = replace(options.model, path=out_path).open(input_shape=model.input_shape)
    result.after = _figures(repaired, xt, yt, *found, targets)
    result.repaired = {"path": str(repaired.path), "sha256": repaired.sha256, "format": repaired.format,
                       "export": export}
    return _written(options, result, ctx)


def _written(options: RepairOptions, result: RepairResult, ctx: JobContext) -> RepairResult:
    """``result``, its report written first when ``options.report`` names a file."""
    from ..report.writer import write_json

    if options.report:
        write_json(options.report, result.to_report())
        ctx.log(f"wrote report {options.report}")
    return result


def scan_targets(path: str, model_sha256: str | None = None) -> tuple[int, ...]:
    """The suspected targets of a ``scan-backdoor`` report (its combined verdict: all scanners, with or
    without references), checked to be a scan of the model whose sha256 is ``model_sha256``; a clean
    verdict gives ``()``.  One-line errors for anything else."""
    from ..backdoor.reference import read_scan_report

    doc = read_scan_report(path, "scan report", evidence=False)
    sha = (doc.get("model") or {}).get("sha256")
    if model_sha256 is not None and sha != model_sha256:
        raise DataError(f"{path} is a scan of another model (sha256 {str(sha)[:12]}...)",
                        "scan this model and give that report")
    found = doc.get("suspected_targets")
    if not isinstance(found, list) or not all(isinstance(t, int) and t >= 0 for t in found):
        raise DataError(f"{path} has no list of suspected targets", "give a report written by scan-backdoor --report")
    return tuple(dict.fromkeys(found))
