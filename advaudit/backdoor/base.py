"""The backdoor-scanner contract.

A scanner is a plain object built from keyword hyperparameters and called on a model and a small set
of clean labelled images::

    scanner = NeuralCleanse(steps=600)
    result = scanner.scan(model, x, y, seed=0)
    result.verdict            # "backdoored" or "clean"
    result.suspected_targets  # labels the scanner flags
    result.classes            # one ClassEvidence per output class

Subclasses write one method, :meth:`BackdoorScanner.run`, and declare what they need as class
attributes (``min_per_class``: clean images of each class the method needs; 0 for data-free
methods).  :meth:`BackdoorScanner.scan` (final) validates the request (gradients, class count, input
shape, images per class), freezes the network's weights for the duration (restored in ``finally``),
seeds a :class:`torch.Generator`, times the run and packages the result.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, final

import numpy as np
import torch

from ..progress import Progress
from ..errors import DataError, ModelError
from ..models import Model

if TYPE_CHECKING:
    from .reference import ReferenceNeeds

"""``progress(stage, done, total)``; the CLI draws it on stderr."""


class SearchStore(Protocol):
    """Where a scanner keeps its search state so that an interrupted scan continues exactly
    (:class:`advaudit.backdoor.units.SearchState`): arrays only, saved as units of work finish."""

    def load(self) -> dict[str, np.ndarray] | None:
        """The state an interrupted run saved last, or None."""

    def save(self, arrays: dict[str, np.ndarray], finished: int, total: int) -> None:
        """Keep the state after ``finished`` of ``total`` units (Neural Cleanse: labels)."""


@dataclass
class ClassEvidence:
    """What a scanner found for one output class.

    ``mask_l1``, ``anomaly_index`` and ``asr`` are trigger-reconstruction figures (None for
    scanners that reconstruct no trigger); ``extra`` holds method-specific numbers.
    """

    label: int
    flagged: bool
    mask_l1: float | None = None
    anomaly_index: float | None = None
    asr: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        return {
            "label": d["label"], "mask_l1": d["mask_l1"], "anomaly_index": d["anomaly_index"],
            "asr": d["asr"], "flagged": d["flagged"], **extra,
        }


@dataclass
class ScanResult:
    """A scanner's verdict and evidence."""

    method: str
    verdict: str  # "backdoored" | "clean"
    suspected_targets: list[int]
    classes: list[ClassEvidence]
    params: dict[str, Any]
    evidence: dict[str, Any] = field(default_factory=dict)
    time_s: float = 0.0
    masks: np.ndarray | None = field(default=None, repr=False)  # (K, 1, H, W) in [0, 1]
    patterns: np.ndarray | None = field(default=None, repr=False)  # (K, C, H, W) in the value range

    @property
    def backdoored(self) -> bool:
        return self.verdict == "backdoored"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "verdict": self.verdict,
            "suspected_targets": list(self.suspected_targets),
            "params": self.params,
            **self.evidence,
            "classes": [c.to_dict() for c in self.classes],
            "time_s": round(self.time_s, 3),
        }


def one_target_result(method: str, flagged: bool, top: int, key: str, values: np.ndarray,
                      evidence: dict[str, Any]) -> ScanResult:
    """The result of a scanner that suspects at most one class, ``top``, from one statistic per class
    (``values``, kept in each class's evidence as ``key``)."""
    classes = [ClassEvidence(label=i, flagged=bool(flagged and i == top), extra={key: float(v)})
               for i, v in enumerate(values)]
    return ScanResult(method=method, verdict="backdoored" if flagged else "clean",
                      suspected_targets=[top] if flagged else [], classes=classes, params={}, evidence=evidence)


@dataclass
class ScanContext:
    """What :meth:`BackdoorScanner.run` may use besides the data."""

    model: Model
    num_classes: int
    input_shape: tuple[int, ...]
    generator: torch.Generator
    seed: int
    progress: Progress | None = None
    state: SearchStore | None = None
    """Optional: save and restore the search state (scanners that cannot resume ignore it)."""

    @property
    def lo(self) -> float:
        return float(self.model.spec.range[0])

    @property
    def hi(self) -> float:
        return float(self.model.spec.range[1])

    @property
    def device(self) -> torch.device:
        return self.model.device

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


class BackdoorScanner(ABC):
    """Base class of model-level backdoor scanners (kind ``backdoor-scanner``)."""

    kind: ClassVar[str] = "backdoor-scanner"
    name: ClassVar[str] = "?"
    min_per_class: ClassVar[int] = 0
    """Clean images of every class the method needs (0: data-free)."""
    reference_key: ClassVar[str | None] = None
    """The per-class evidence field that ``--reference`` compares with the same class in clean reference
    models (None: the scanner has no reference test; it then takes ``reference=`` in its constructor)."""
    reference_side: ClassVar[str] = "low"
    """Which side of that statistic a backdoor pushes its target to: low or high."""
    reference_settings: ClassVar[tuple[str, ...]] = ()
    """The hyperparameters a reference scan must share with the scan (they shape the statistic)."""

    @classmethod
    def unsupported(cls, model: Model) -> str | None:
        """Why this method cannot scan ``model`` (``--method all`` then leaves it out), or None."""
        return None

    def reference_needs(self) -> ReferenceNeeds | None:
        """What a reference report must hold for this scanner (None: no reference test)."""
        from .reference import ReferenceNeeds

        if self.reference_key is None:
            return None
        return ReferenceNeeds(self.reference_key, {k: getattr(self, k) for k in self.reference_settings},
                              same_images=self.min_per_class > 0)

    def params(self) -> dict[str, Any]:
        """The hyperparameters, for the report (public attributes)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({inner})"

    @final
    def scan(
        self,
        model: Model,
        x: np.ndarray | None,
        y: np.ndarray | None,
        *,
        seed: int = 0,
        progress: Progress | None = None,
        state: SearchStore | None = None,
    ) -> ScanResult:
        """Validate, freeze the weights, run the method, time it (``state``: see :class:`ScanContext`)."""
        adopt_shape(model, x)
        k = check_model(model)
        shape = tuple(model.input_shape or ())
        if x is not None and len(x):
            x = np.asarray(x, dtype=np.float32)
            if tuple(x.shape[1:]) != shape:
                raise DataError(
                    f"clean images have shape {tuple(x.shape[1:])} but the model takes {shape}",
                    "check --data and the model's --input-shape/--layout",
                )
        check_per_class(self.name, self.min_per_class, y, k)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        ctx = ScanContext(model, k, shape, gen, int(seed), progress, state)
        module = model.torch_module()
        saved = [(p, p.requires_grad) for p in module.parameters()] if module is not None else []
        training = module.training if module is not None else False
        try:
            for p, _ in saved:
                p.requires_grad_(False)
            if module is not None:
                module.eval()
            start = time.perf_counter()
            result = self.run(ctx, x, y)
            result.time_s = time.perf_counter() - start
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)
            if module is not None:
                module.train(training)
        result.params = self.params()
        return result

    @abstractmethod
    def run(self, ctx: ScanContext, x: np.ndarray | None, y: np.ndarray | None) -> ScanResult:
        """The method itself."""


def adopt_shape(model: Model, x: np.ndarray | None) -> None:
    """A model that does not declare its input shape (TorchScript) takes the data's."""
    if model.input_shape is None and x is not None and len(x):
        model.set_input_shape(tuple(int(s) for s in np.asarray(x).shape[1:]))


def check_model(model: Model) -> int:
    """The class count of a model a scanner can work on (gradients, >= 2 classes)."""
    k = model.num_classes
    if k is None or model.input_shape is None:
        raise ModelError(
            f"the input shape of {model.path.name} is unknown",
            "pass --input-shape C,H,W or give --data",
        )
    if k < 2:
        raise ModelError(f"{model.path.name} has {k} output class; a backdoor scan needs at least 2")
    if not model.has_gradients:
        raise ModelError(
            f"{model.path.name} has no gradients ({model.gradients.note})",
            "backdoor scanners optimise triggers by gradient; export the model so that it converts "
            "(ONNX via onnx2torch, or TorchScript)",
        )
    return int(k)


def check_per_class(name: str, need: int, y: np.ndarray | None, num_classes: int) -> None:
    """Refuse data with fewer than ``need`` clean images of some class (one line, says how many)."""
    if need <= 0:
        return
    if y is None:
        raise DataError(f"{name} needs labelled clean images ({need} of each class)")
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes)[:num_classes]
    short = np.flatnonzero(counts < need)
    if len(short):
        worst = int(short[np.argmin(counts[short])])
        raise DataError(
            f"{name} needs at least {need} clean images of each of the {num_classes} classes "
            f"({need * num_classes} in all); class {worst} has {int(counts[worst])}"
            + (f" and {len(short) - 1} more classes are short" if len(short) > 1 else ""),
            "give more images with --data/--n",
        )
