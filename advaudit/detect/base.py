"""The detector contract: what LCR, STRIP and third-party detectors implement, and how a detector
is found by name.

A detector is a frozen, keyword-only dataclass of typed hyperparameters (``overlays: int = 64``).
It is registered as an ``advaudit.plugins`` entry point whose object declares ``kind = "detector"``
and is looked up with :func:`get_detector` (``lcr``, ``strip``, or a plugin's name), so the command
line reaches every installed detector through ``--method NAME[:key=value,...]``.

Three steps, each a pure function of the model, the calibration, the inputs and a seed:

* :meth:`Detector.calibrate` learns from clean labelled inputs and returns a calibration that is
  saved as JSON (schema ``advaudit.calibration/1`` with a ``method`` field; files without one are
  LCR calibrations from before detectors had a contract);
* :meth:`Detector.score` gives one number per input, higher = more suspicious (used for AUROC);
* :meth:`Detector.decide` gives a :class:`Decisions` (verdict, label, score per input).

:class:`ThresholdCalibration` serves every detector that flags inputs scoring above a threshold
(STRIP, the example plugin's ``max-softmax``); :meth:`Detector.decide` does exactly that by default.
"""

from __future__ import annotations

import dataclasses
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from ..errors import DataError, PluginError, UsageError, first_line
from ..params import coerce, parse_spec

if TYPE_CHECKING:
    from ..data.views import Rows
    from ..distributed import Shard
    from ..models import Model

CALIBRATION_SCHEMA = "advaudit.calibration/1"
VERDICTS = np.array(["undecided", "normal", "adversarial"])
"""Verdict names, indexed by decision + 1 (UNDECIDED = -1, NORMAL = 0, ADVERSARIAL = 1)."""


class DetectorCalibration(Protocol):
    """What a detector's calibration offers: its method, JSON form, file writing and a model check."""

    method: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (``schema`` ``advaudit.calibration/1``)."""
        ...

    def save(self, path: str | Path) -> Path:
        """Write the calibration (and any file it keeps beside it) atomically."""
        ...

    def check_for(self, model: Model) -> None:
        """Raise a one-line :class:`UsageError` if the calibration was made for another model."""
        ...

    def summary(self) -> str:
        """The line ``advaudit detect calibrate`` prints."""
        ...


@dataclass
class Decisions:
    """Per-input results of :meth:`Detector.decide` (arrays of length N) and the time it took.

    ``verdict`` holds ``adversarial``, ``normal`` or ``undecided``; ``extra`` per-method arrays
    (LCR: ``lcr``, ``mutations``, ``error_bound``); ``summary`` per-method totals placed after the
    counts in :meth:`totals` (LCR: ``mean_mutations``)."""

    verdict: np.ndarray
    labels: np.ndarray
    score: np.ndarray
    time_s: float
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def flagged(self) -> np.ndarray:
        """True for each input judged adversarial."""
        return self.verdict == "adversarial"

    def totals(self) -> dict[str, Any]:
        """Counts per verdict, the method's own totals, the time and the cost per input."""
        n = len(self.verdict)
        return {
            "n": n,
            "adversarial": int((self.verdict == "adversarial").sum()),
            "normal": int((self.verdict == "normal").sum()),
            "undecided": int((self.verdict == "undecided").sum()),
            **self.summary,
            "time_s": self.time_s,
            "ms_per_input": 1000 * self.time_s / max(n, 1),
        }


@dataclass
class ThresholdCalibration:
    """A calibration that is a score threshold: inputs scoring above it are adversarial.

    ``params`` records the detector's hyperparameters (so a calibration file rebuilds the detector
    it was made with), ``extra`` any further figures a method keeps (STRIP: the entropy threshold).
    """

    method: str
    threshold: float
    frr: float
    n_inputs: int
    model_sha256: str
    model_path: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = CALIBRATION_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, in field order."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the JSON document atomically."""
        from ..io import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path) -> ThresholdCalibration:
        """Read the document ``load_calibration`` found at ``path`` (a one-line :class:`DataError` if damaged)."""
        try:
            return cls(
                method=str(d["method"]), threshold=float(d["threshold"]), frr=float(d["frr"]),
                n_inputs=int(d["n_inputs"]), model_sha256=str(d["model_sha256"]), model_path=str(d["model_path"]),
                seed=int(d["seed"]), params=dict(d.get("params", {})), extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            field_name = first_line(exc, 80)
            raise DataError(f"{path} is a damaged calibration file (field {field_name})") from None

    def check_for(self, model: Model) -> None:
        """Refuse to use this calibration for another model."""
        if model.sha256 != self.model_sha256:
            raise UsageError(
                f"the calibration was made for another model ({Path(self.model_path).name}, "
                f"sha256 {self.model_sha256[:12]}...)",
                "calibrate this model with 'advaudit detect calibrate'",
            )

    def summary(self) -> str:
        """``threshold = ...`` with the false rejection rate it was chosen for."""
        return (f"threshold = {self.threshold:.4f} ({self.method}, false rejection rate {self.frr:g} "
                f"on {self.n_inputs} clean inputs)")

    def describe(self) -> dict[str, Any]:
        """The ``calibration`` section of a detect report (beside its path)."""
        return {"method": self.method, "threshold": self.threshold, "frr": self.frr, **self.extra}


@dataclass(frozen=True, kw_only=True)
class Detector(ABC):
    """Base of every detector: subclasses are ``@dataclass(frozen=True, kw_only=True)`` whose fields
    are the hyperparameters, set a ``name`` and implement :meth:`calibrate` and :meth:`score`.

    The default :meth:`decide` flags inputs whose score exceeds a :class:`ThresholdCalibration`'s
    threshold; :meth:`load_calibration` reads one.  A detector with another calibration overrides
    both."""

    kind: ClassVar[str] = "detector"
    name: ClassVar[str] = "?"
    needs_labels: ClassVar[bool] = True  # whether calibrate() reads the labels of the clean inputs

    @abstractmethod
    def calibrate(self, model: Model, x: Rows, y: np.ndarray | None, *, seed: int = 0,
                  shard: Shard | None = None) -> Any:
        """Learn what clean inputs look like from ``x`` (canonical inputs) and their labels ``y``
        (None when the detector does not need them: :attr:`needs_labels`)."""

    @abstractmethod
    def score(self, model: Model, calibration: Any, x: Rows, *, seed: int = 0,
              shard: Shard | None = None) -> np.ndarray:
        """One float per input; higher = more suspicious."""

    def decide(self, model: Model, calibration: Any, x: Rows, *, seed: int = 0,
               shard: Shard | None = None) -> Decisions:
        """Adversarial where the score exceeds the calibration's threshold, normal elsewhere."""
        start = time.perf_counter()
        score = self.score(model, calibration, x, seed=seed, shard=shard)
        labels = model.query(x).labels
        verdict = np.where(score > calibration.threshold, "adversarial", "normal")
        return Decisions(verdict, labels, score, time.perf_counter() - start)

    @classmethod
    def load_calibration(cls, d: dict[str, Any], path: Path) -> Any:
        """The calibration held in the JSON document ``d`` read from ``path``."""
        return ThresholdCalibration.from_dict(d, path)

    def params(self) -> dict[str, Any]:
        """The hyperparameters by name, in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def report_sections(self, calibration: Any, calibration_path: str) -> dict[str, Any]:
        """What a detect report says about the method, after its ``data`` section."""
        return {"method": self.name, "detector": self.params(),
                "calibration": {"path": calibration_path, **calibration.describe()}}

    def input_rows(self, decisions: Decisions, indices: np.ndarray) -> list[dict[str, Any]]:
        """The ``inputs`` list of a detect report: index, verdict, label and score of each input."""
        return [{"index": int(i), "verdict": str(v), "label": int(lab), "score": float(s)}
                for i, v, lab, s in zip(indices, decisions.verdict, decisions.labels, decisions.score, strict=False)]


def parse_method(text: str) -> tuple[str, dict[str, str]]:
    """``--method NAME[:key=value,...]`` -> (name, {key: value})."""
    return parse_spec(text, "detector")


def detector_class(name: str) -> type[Detector]:
    """The registered detector ``name`` (a one-line :class:`PluginError` lists the installed ones)."""
    from ..registry import get_registry

    cls = get_registry().get("detector", name)
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise PluginError(f"plugin {name!r} is not an advaudit Detector",
                          "derive it from advaudit.detect.base.Detector")
    return cls


def get_detector(name: str, **params: Any) -> Detector:
    """Build the registered detector ``name``; strings (``overlays="32"``) are cast to the type of
    the hyperparameter's default, unknown names are a one-line :class:`PluginError`."""
    cls = detector_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        known = ", ".join(f"{k}={f.default}" for k, f in fields.items()) or "none"
        raise PluginError(f"detector {name!r} has no parameter {unknown[0]!r}", f"parameters: {known}")
    owner = f"detector {name!r}"
    typed = {k: coerce(owner, k, v, fields[k].default) for k, v in params.items()}
    try:
        return cls(**typed)
    except TypeError as exc:
        raise PluginError(f"cannot build detector {name!r}: {exc}") from None


def read_calibration_document(path: str | Path) -> dict[str, Any]:
    """The JSON document of a calibration file (one-line :class:`DataError` when it is none)."""
    from ..safeio import parse_json, read_text

    p = Path(path)
    text = read_text(p, "calibration file", max_bytes=16 * 2**20,
                     missing=(f"calibration file not found: {p}", "make one with 'advaudit detect calibrate'"))
    try:
        d = parse_json(text, f"calibration file {p}")
    except json.JSONDecodeError as exc:
        raise DataError(f"{p} is not a calibration file ({first_line(exc)})") from None
    if not isinstance(d, dict) or d.get("schema") != CALIBRATION_SCHEMA:
        raise DataError(f"{p} is not an advaudit calibration ({CALIBRATION_SCHEMA})")
    return d


def calibration_method(d: dict[str, Any]) -> str:
    """The method a calibration document was made with (``lcr`` for files without ``method``)."""
    return str(d.get("method", "lcr"))


def load_calibration(path: str | Path) -> tuple[str, Any]:
    """(method, calibration) from a calibration file, read by its detector's class."""
    d = read_calibration_document(path)
    method = calibration_method(d)
    return method, detector_class(method).load_calibration(d, Path(path))
