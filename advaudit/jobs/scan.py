"""The ``scan-backdoor`` job: run one or every backdoor scanner on a model, write the trigger images
and the report, gate the verdict.

``advaudit scan-backdoor`` and the audit's ``scan-backdoor`` step both call :func:`scan_backdoor`;
every default (300 clean images, Neural Cleanse's mini-batch of 32) lives here once.  With
``report`` the scan is crash-safe: each finished scanner and Neural Cleanse's search state are kept
in ``REPORT.partial/``, and ``resume=True`` continues from them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..gates import GateResult, GateSpec, evaluate_gates
from ..registry import get_registry
from .base import DataOptions, Gated, JobContext, JobOptions, batch_size_for, open_inputs, report_head

if TYPE_CHECKING:
    from ..backdoor.scan import CombinedScan
    from ..checkpoint import Checkpoint
    from ..data import PreparedData
    from ..models import Model

DEFAULT_N = 300
"""Clean images a scan reads when ``data.n`` is not given."""
NC_BATCH_BASE = 32
"""Neural Cleanse's mini-batch of clean images per step, fitted down for large inputs."""
NC = "neural-cleanse"


@dataclass(frozen=True, kw_only=True)
class ScanOptions(JobOptions):
    """What to scan and how.  ``None`` means "the default": ``data.n`` 300, ``steps`` each scanner's
    own, ``anomaly_threshold`` Neural Cleanse's 2 (paper rule) and ``min_ratio`` its gap rule's floor
    (both apply to neural-cleanse only), ``reference``: scan reports (or folders of them) of clean
    reference models of the same task, against which every scanner with a reference test decides
    (``nc_rule`` None: Neural Cleanse's reference rule with references, else its gap rule), ``batch_size``
    (Neural Cleanse's mini-batch) 32 fitted to the input size.  ``data`` may be None for data-free
    scanners (mm-bd).  ``report``: write the JSON report there (and keep a checkpoint beside it);
    ``triggers_dir``: write mask / pattern PNGs there; ``gates``: e.g. ``(gates.fail_on_backdoor(),)``;
    ``command``: the command line the report records."""

    data: DataOptions | None = None
    method: str = NC
    steps: int | None = None
    alpha: float = 0.05
    combine: str = "bonferroni"
    nc_rule: str | None = None
    min_ratio: float | None = None
    reference: tuple[str, ...] = ()
    anomaly_threshold: float | None = None
    target_labels: tuple[int, ...] | None = None
    batch_size: int | None = None
    triggers_dir: str | None = None
    gates: tuple[GateSpec, ...] = ()
    resume: bool = False
    command: str = "advaudit scan-backdoor"


@dataclass
class ScanResult(Gated):
    """A finished scan: the combined verdict and each method's evidence, what was scanned, its gates."""

    kind: ClassVar[str] = "scan-backdoor"

    scan: CombinedScan
    model_section: dict[str, Any]
    data_section: dict[str, Any] | None
    command: str
    seed: int
    meta: dict[str, Any]
    gates: tuple[GateResult, ...] = ()
    triggers_dir: str | None = None
    trigger_files: tuple[str, ...] = ()

    def metrics(self) -> dict[str, Any]:
        """``verdict``, ``suspected_targets`` (comma-separated), Neural Cleanse's ``anomaly_index``
        (its largest) and MM-BD's ``mmbd_p_value``, where those methods ran."""
        return scan_metrics(self.scan)

    def to_report(self) -> dict[str, Any]:
        """The ``advaudit.report/1`` document of kind ``scan-backdoor`` (what ``--report`` writes)."""
        scan = self.scan
        report = report_head(self.command, self.seed, self.meta)
        report.update({
            "kind": self.kind,
            "model": self.model_section,
            "data": self.data_section,
            "methods": [r.method for r in scan.results],
            "verdict": scan.verdict,
            "suspected_targets": scan.suspected_targets,
            "classes": scan.classes(),
            "evidence": {r.method: r.to_dict() for r in scan.results},
            "combined": scan.describe(),
            "time_s": round(scan.time_s, 3),
            "gates": [g.to_dict() for g in self.gates],
            "passed": self.passed,
        })
        if self.triggers_dir is not None:
            report["triggers_dir"] = self.triggers_dir
        return report


def scan_metrics(scan: CombinedScan) -> dict[str, Any]:
    """The flat metrics of a scan: :func:`advaudit.report.normalize.scan_metrics` of its report."""
    from ..report.normalize import scan_metrics as from_report

    return from_report({
        "verdict": scan.verdict, "suspected_targets": scan.suspected_targets, "combined": scan.describe(),
        "evidence": {r.method: r.to_dict() for r in scan.results},
    })


def scan_report(
    scan: CombinedScan, model: Any, data: Any, command: list[str] | str, seed: int, *, fail_on_backdoor: bool = False
) -> dict[str, Any]:
    """The report of ``scan`` (verdict, suspected targets, per-class figures, each method's evidence),
    for callers that ran :func:`advaudit.backdoor.scan.scan_model` themselves."""
    from ..gates import fail_on_backdoor as backdoor_gate
    from ..report.writer import base_report, model_section

    base = base_report(command, seed)
    result = ScanResult(
        scan=scan, model_section=model_section(model), data_section=None if data is None else data.dataset.describe(),
        command=base["command"], seed=seed, meta=base["meta"],
        gates=_scan_gates([backdoor_gate()] if fail_on_backdoor else [], scan),
    )
    return result.to_report()


def _scan_gates(specs: Sequence[GateSpec], scan: CombinedScan) -> tuple[GateResult, ...]:
    """The gates decided on the scan's metrics; a verdict gate says which classes are suspected."""
    targets = ", ".join(map(str, scan.suspected_targets)) or "none"
    return tuple(
        replace(g, reason=f"verdict {g.value}" + ("" if g.value == "clean" else f" (suspected target(s) {targets})"))
        if g.spec.metric == "verdict" else g
        for g in evaluate_gates(specs, scan_metrics(scan))
    )


def scanner_params(options: ScanOptions, methods: list[str], model: Model,
                   data: PreparedData | None = None) -> dict[str, dict[str, Any]]:
    """Each scanner's keyword arguments: ``steps`` for all, ``alpha`` for every scanner whose constructor
    takes it (each one's own verdict at the scan's false-alarm rate), Neural Cleanse's rule, anomaly threshold, labels,
    mini-batch (given, else :data:`NC_BATCH_BASE` fitted to the model's input size) and, with
    ``options.reference``, the reference statistics of every scanner with a reference test (read from
    the reports and checked against ``model`` and ``data``)."""
    params: dict[str, dict[str, Any]] = {m: {} for m in methods}
    if options.steps is not None:
        for m in methods:
            params[m]["steps"] = options.steps
    registry = get_registry()
    for m in methods:  # every scanner that takes alpha decides its own verdict at the scan's false-alarm rate
        if "alpha" in inspect.signature(registry.get("backdoor-scanner", m)).parameters:
            params[m]["alpha"] = options.alpha
    if NC in params:
        params[NC]["rule"] = options.nc_rule or ("reference" if options.reference else "gap")
        if options.anomaly_threshold is not None:
            params[NC]["anomaly_threshold"] = options.anomaly_threshold
        if options.min_ratio is not None:
            params[NC]["min_ratio"] = options.min_ratio
        if options.target_labels is not None:
            params[NC]["labels"] = options.target_labels
        params[NC]["batch_size"] = batch_size_for(options.batch_size, model.input_shape, NC_BATCH_BASE)
    if options.reference:
        for method, values in _references(options, params, model, data).items():
            params[method]["reference"] = values
    return params


def _references(options: ScanOptions, params: dict[str, dict[str, Any]], model: Model,
                data: PreparedData | None) -> dict[str, tuple[tuple[float, ...], ...]]:
    """The clean reference models' per-class statistics of every scanner that has a reference test."""
    from ..backdoor.reference import images_digest, read_reference_scans
    from ..backdoor.scan import build_scanner
    from ..errors import UsageError

    needs = {}
    for method, kw in params.items():
        built = build_scanner(method, {k: v for k, v in kw.items() if k != "rule"})
        need = built.reference_needs()
        if need is not None:
            needs[method] = need
    if not needs:
        raise UsageError(f"--reference: no scanner of --method {options.method} has a reference test",
                         "use --method neural-cleanse, mm-bd or all")
    if model.num_classes is None:
        raise UsageError("--reference needs the model's class count", "give --input-shape or --data")
    refs = read_reference_scans(options.reference, needs, classes=int(model.num_classes),
                                images_sha256=None if data is None else images_digest(data.x),
                                model_sha256=model.sha256)
    return refs.values


def _fingerprint_options(options: ScanOptions) -> dict[str, Any]:
    """The options a checkpoint is checked against, named as the command-line options are (so a
    refused ``--resume`` names the flag that changed); outputs and paths are left out (the model and
    data enter the fingerprint by content)."""
    m, d = options.model, options.data
    return {
        "method": options.method, "steps": options.steps, "anomaly_threshold": options.anomaly_threshold,
        "alpha": options.alpha, "combine": options.combine, "nc_rule": options.nc_rule,
        "min_ratio": options.min_ratio, "target_labels": options.target_labels,
        "reference": list(options.reference),
        "batch_size": options.batch_size, "seed": options.seed,
        "value_range": m.range, "mean": m.mean, "std": m.std, "layout": m.layout, "input_shape": m.input_shape,
        "device": m.device, "precision": m.precision,
        "data_format": None if d is None else d.format, "n": None if d is None else d.n,
        "offset": None if d is None else d.offset, "data_seed": None if d is None else d.seed,
        "resize": None if d is None else d.resize, "crop": None if d is None else d.crop,
    }


def _open_checkpoint(options: ScanOptions, ctx: JobContext, model: Model, data: PreparedData | None,
                     methods: list[str], params: dict[str, dict[str, Any]]) -> Checkpoint | None:
    """The checkpoint beside ``options.report`` (None without one); only the main process writes."""
    if not options.report:
        return None
    from ..checkpoint import Checkpoint, data_inputs, make_inputs
    from ..distributed import is_main_process

    inputs = make_inputs(
        "scan-backdoor", model, _fingerprint_options(options), options.seed, methods=methods, params=params,
        data=None if data is None or options.data is None else data_inputs(options.data.path, data.x, data.y),
    )
    return Checkpoint.open(options.report, "scan-backdoor", inputs, resume=options.resume,
                           writer=is_main_process(), log=ctx.log)


def _write_triggers(options: ScanOptions, ctx: JobContext, scan: CombinedScan, model: Model) -> tuple[str, ...]:
    """The primary method's reconstructed triggers as PNGs in ``options.triggers_dir`` (none when no
    method reconstructs a trigger)."""
    from ..backdoor.images import write_trigger_pngs

    prim = scan.primary
    if options.triggers_dir is None:
        return ()
    if prim.masks is None or prim.patterns is None:
        ctx.log("no trigger images: the method(s) run reconstruct no trigger")
        return ()
    files = write_trigger_pngs(
        options.triggers_dir, prim.masks, prim.patterns, model.spec.range,
        l1=[c.mask_l1 or 0.0 for c in prim.classes], flagged=[c.flagged for c in prim.classes],
    )
    ctx.log(f"wrote {len(files)} trigger images to {options.triggers_dir}")
    return tuple(str(f) for f in files)


def applicable(methods: list[str], model: Model, ctx: JobContext) -> list[str]:
    """``--method all``: the scanners that can scan ``model`` (each one left out is logged, with why)."""
    from ..registry import get_registry

    keep = []
    for m in methods:
        why = get_registry().get("backdoor-scanner", m).unsupported(model)
        if why is None:
            keep.append(m)
        else:
            ctx.log(f"{m} left out: {why}")
    return keep


def scan_backdoor(options: ScanOptions, ctx: JobContext | None = None) -> ScanResult:
    """Scan ``options.model`` for a backdoor; write the trigger images and the report if asked.

    The model is the context's if it lends one (the audit), else opened from the options; the clean
    data (``options.data.n`` or :data:`DEFAULT_N` images) is read after it, because a TorchScript
    model learns its input shape from the data."""
    from ..backdoor.scan import method_names, scan_model
    from ..backdoor.units import ScanUnits
    from ..report.writer import base_report, model_section, write_json

    ctx = ctx or JobContext()
    methods = method_names(options.method)
    data_opts = options.data
    if data_opts is not None and data_opts.n is None:
        data_opts = replace(data_opts, n=DEFAULT_N)
    model, data = open_inputs(options.model, data_opts, ctx)
    if options.method == "all":
        methods = applicable(methods, model, ctx)
    params = scanner_params(options, methods, model, data)
    ckpt = _open_checkpoint(options, ctx, model, data, methods, params)
    what = "(data-free)" if data is None else f"on {len(data)} clean images"
    ctx.log(f"scanning {model.path.name} with {', '.join(methods)} {what}")
    scan = scan_model(
        model, None if data is None else data.x, None if data is None else data.y,
        methods=methods, params=params, seed=options.seed, progress=ctx.progress,
        units=None if ckpt is None else ScanUnits(ckpt), alpha=options.alpha, combine=options.combine,
    )
    base = base_report(options.command, options.seed)
    if ckpt is not None and options.resume:
        base["meta"]["resumed_units"] = ckpt.available
    files = _write_triggers(options, ctx, scan, model)
    result = ScanResult(
        scan=scan, model_section=model_section(model), data_section=None if data is None else data.dataset.describe(),
        command=base["command"], seed=options.seed, meta=base["meta"],
        gates=_scan_gates(options.gates, scan),
        triggers_dir=options.triggers_dir if files else None, trigger_files=files,
    )
    if options.report:
        write_json(options.report, result.to_report())
        ctx.log(f"wrote report {options.report}")
    if ckpt is not None:
        ckpt.finish()
    return result
