"""The ``detect calibrate`` and ``detect`` jobs: calibrate a detector on clean data, and flag inputs
with a calibration (``detect evaluate`` is :mod:`advaudit.jobs.detect_evaluate`).

The detector is named by ``method`` (``lcr``, ``strip`` or a plugin's name, with optional
``:key=value,...`` hyperparameters) and found through the registry.  The LCR-only options (mutation,
radius, mutation count, SPRT settings) take their defaults from :class:`~advaudit.detect.lcr.LCRDetector`
and are refused with another method.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from ..detect.base import Decisions, Detector, get_detector, load_calibration, parse_method
from ..detect.lcr import LCRDetector
from ..errors import UsageError
from .base import DataOptions, JobContext, JobOptions, ModelOptions, open_inputs

LCR = LCRDetector()
"""The LCR defaults, read by the options classes below (the one place they are written is LCRDetector)."""

LCR_FLAGS = {
    "mutation": "--mutation", "radius": "--radius", "n_mutations": "--mutations", "lcr_mutations": "--lcr-mutations",
    "alpha": "--alpha", "beta": "--beta", "mu": "--mu", "sigma": "--sigma", "max_mutations": "--max-mutations",
}
"""Options fields that only LCR takes, and the command-line flag that sets each."""


def check_lcr_only(options: Any, method: str) -> None:
    """Refuse LCR options moved off their defaults when ``method`` is another detector (one line)."""
    if method == "lcr":
        return
    for f in fields(options):
        if f.name in LCR_FLAGS and getattr(options, f.name) != f.default:
            raise UsageError(f"{LCR_FLAGS[f.name]} is an LCR option; --method {method} does not take it",
                             "leave it out, or use --method lcr")


def build_detector(method: str, options: Any, base_params: dict[str, Any] | None = None) -> Detector:
    """The detector ``method`` (``NAME[:key=value,...]``) names.  LCR gets the LCR fields of ``options``;
    another detector ``base_params`` (a calibration's recorded hyperparameters), then the spec's values."""
    name, params = parse_method(method)
    check_lcr_only(options, name)
    if name == "lcr":
        lcr = {"n_mutations" if k == "lcr_mutations" else k: getattr(options, k)
               for k in LCR_FLAGS if hasattr(options, k)}
        return get_detector(name, **{**lcr, **params})
    return get_detector(name, **{**(base_params or {}), **params})


@dataclass(frozen=True, kw_only=True)
class DetectCalibrateOptions:
    """``advaudit detect calibrate``: calibrate ``method`` on the clean labelled ``data``, write ``out``."""

    model: ModelOptions
    data: DataOptions
    out: str
    method: str = "lcr"
    mutation: str = LCR.mutation
    radius: str | float | tuple[float, ...] | None = LCR.radius
    n_mutations: int = LCR.n_mutations
    seed: int = 0


@dataclass
class DetectCalibrateResult:
    """A calibration, written to ``path``."""

    kind: ClassVar[str] = "detect-calibrate"

    method: str
    calibration: Any
    path: str

    def metrics(self) -> dict[str, Any]:
        """``kappa_nor`` for LCR, ``threshold`` for the others."""
        if self.method == "lcr":
            return {"kappa_nor": self.calibration.kappa_nor}
        return {"threshold": self.calibration.threshold}

    def to_report(self) -> dict[str, Any]:
        """The calibration file's JSON document."""
        return dict(self.calibration.to_dict())

    @property
    def passed(self) -> bool:
        """Calibration has no gate."""
        return True


def detect_calibrate(options: DetectCalibrateOptions, ctx: JobContext | None = None) -> DetectCalibrateResult:
    """Calibrate the detector on clean data and save the calibration (and any file it keeps beside it)."""
    ctx = ctx or JobContext()
    detector = build_detector(options.method, options)
    if isinstance(detector, LCRDetector):
        detector.parsed_mutation()  # a bad --mutation / --radius fails before any loading
    model, data = open_inputs(options.model, options.data, ctx, need_labels=detector.needs_labels)
    assert data is not None
    cal = detector.calibrate(model, data.view, data.y, seed=options.seed)
    cal.save(options.out)
    ctx.log(f"wrote {options.out}")
    return DetectCalibrateResult(detector.name, cal, options.out)


@dataclass(frozen=True, kw_only=True)
class DetectOptions(JobOptions):
    """``advaudit detect``: decide each of ``inputs`` with the calibration file ``calibration``.

    ``method`` None takes the method from the file; the SPRT fields apply to LCR only; ``report``
    is written by the job."""

    inputs: DataOptions
    calibration: str
    method: str | None = None
    alpha: float = LCR.alpha
    beta: float = LCR.beta
    mu: float = LCR.mu
    sigma: float | None = LCR.sigma
    max_mutations: int = LCR.max_mutations
    fail_on_adversarial: bool = False


@dataclass
class DetectResult:
    """The verdict of every input, and what the report says about model, data and method."""

    kind: ClassVar[str] = "detect"

    detector: Detector
    calibration: Any
    decisions: Decisions
    indices: np.ndarray
    model: dict[str, Any]
    data: dict[str, Any]
    calibration_path: str
    fail_on_adversarial: bool
    envelope: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """Verdict counts and cost per input."""
        t = self.decisions.totals()
        return {"adversarial": t["adversarial"], "normal": t["normal"], "undecided": t["undecided"],
                "ms_per_input": t["ms_per_input"]}

    @property
    def passed(self) -> bool:
        """False when ``--fail-on-adversarial`` is set and an input was flagged."""
        return not (self.fail_on_adversarial and bool(self.decisions.flagged.any()))

    def to_report(self) -> dict[str, Any]:
        """The ``detect`` report (LCR: the layout it has always had; other methods add ``method``
        and give each input a ``score``)."""
        report = dict(self.envelope)
        report.update({
            "kind": "detect", "model": self.model, "data": self.data,
            **self.detector.report_sections(self.calibration, self.calibration_path),
            "inputs": self.detector.input_rows(self.decisions, self.indices),
            "totals": self.decisions.totals(),
            "passed": self.passed,
        })
        return report


def detect(options: DetectOptions, ctx: JobContext | None = None) -> DetectResult:
    """Load the calibration, rebuild its detector and decide every input."""
    from ..report.writer import base_report, write_json

    ctx = ctx or JobContext()
    method, cal = load_calibration(options.calibration)
    if options.method is not None and parse_method(options.method)[0] != method:
        raise UsageError(f"{options.calibration} is a {method} calibration, not {parse_method(options.method)[0]}",
                         f"detect with --method {method}, or calibrate with the method you want")
    detector = build_detector(options.method or method, options, getattr(cal, "params", None))
    model, _ = open_inputs(options.model, None, ctx)
    cal.check_for(model)
    _, data = open_inputs(options.model, options.inputs, JobContext(progress=ctx.progress, model=model),
                          need_labels=False)
    assert data is not None
    decisions = detector.decide(model, cal, data.view, seed=options.seed, shard=ctx.shard)
    result = DetectResult(
        detector, cal, decisions, data.dataset.indices,
        {"path": str(model.path), "sha256": model.sha256, "format": model.format}, data.dataset.describe(),
        options.calibration, options.fail_on_adversarial, base_report(options.command, options.seed),
    )
    if options.report:
        write_json(options.report, result.to_report())
        ctx.log(f"wrote report {options.report}")
    return result
