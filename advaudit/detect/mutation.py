"""How LCR mutates inputs: input operators chained with ``+`` (with a radius each) or one model
operator (a mutation rate), and what ``--mutation auto`` becomes for the data at hand.

Kept apart from :mod:`advaudit.detect.lcr` so the calibration file, the sampler and the command
line share one parser (:meth:`Mutation.parse`) and one set of defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


from ..data.views import Rows
from ..errors import UsageError
from .model_mutation import OPERATORS as MODEL_OPERATORS
from .mutations import MUTATORS

DEFAULT_MUTATION = "auto"
N_MUTATIONS = 200
"""Default mutations per input when LCR is estimated without early stopping (calibration, AUROC)."""
DEFAULT_RADII: dict[str, float] = {
    "gaussian": 0.1, "uniform": 0.3, "pixel": 0.05, "patch": 0.5, "brightness": 0.5, "darken": 0.5,
}
"""Radius of each input operator when ``--radius`` is not given (model operators: :data:`DEFAULT_RATE`)."""
DEFAULT_RATE = 0.01
AUTO: dict[str, tuple[str, tuple[float, ...]]] = {
    "grayscale": ("darken+pixel", (0.5, 0.05)),
    "colour": ("brightness", (0.5,)),
}
"""What ``--mutation auto`` (the default) becomes, by the inputs' channel count.

* One channel: ``darken+pixel`` (0.5, 0.05), chosen on MNIST test images 9000-9599, held out from
  every benchmark set: 300 normal images against FGSM / JSMA / C&W / BB examples crafted from another
  300 (300 mutations per input).  Mean AUROC over the four attacks: darken+pixel 0.9806, 0.4/0.05
  0.9792, 0.5/0.03 0.9782, 0.6/0.03 0.9767, 0.5/0.08 0.9717; brightness 0.5 0.9756; pixel 0.05 alone
  is strong on JSMA only, darkening alone on the dense attacks only.
* Colour: ``brightness`` 0.5.  Random pixel resets break a CIFAR-10 ResNet's prediction on clean images
  (kappa_nor 0.57 with darken+pixel, AUROC 0.73 on the CIFAR-10 benchmark, against 0.90 with
  brightness)."""


@dataclass(frozen=True)
class Mutation:
    """How inputs are mutated: input operators with their radii, or model mutants (operator, rate).

    ``operator`` is one operator or a chain joined by ``+`` (``darken+pixel``: every mutation is
    darkened, then has random pixels reset); ``radius`` is given as a float or one float per operator
    in the chain, and kept as a tuple (:attr:`radii`).  ``auto`` (the default) picks by the inputs'
    channel count (:data:`AUTO`) when the mutation meets data (:meth:`resolve`).  Use :meth:`parse`
    for user-given text."""

    operator: str = DEFAULT_MUTATION
    radius: float | tuple[float, ...] | None = None
    mutants: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # one form inside: a tuple with one float per operator (empty for ``auto``)
        r = self.radius
        radii = () if r is None else tuple(float(v) for v in r) if isinstance(r, (tuple, list)) else (float(r),)
        object.__setattr__(self, "radius", radii)

    @classmethod
    def parse(cls, operator: str, radius: Any = None, mutants: tuple[int, ...] = ()) -> Mutation:
        """From CLI / config / calibration values: ``radius`` may be None (each operator's default),
        a number, a list, or text such as ``"0.5,0.05"``."""
        ops = [o.strip() for o in str(operator).split("+")]
        if ops == ["auto"]:
            if radius is not None and radius != "":
                raise UsageError("--radius goes with an explicit --mutation",
                                 "name the operators, e.g. --mutation darken+pixel --radius 0.5,0.05")
            return cls("auto", None, tuple(mutants))
        if radius is None or radius == "":
            radii = tuple(DEFAULT_RATE if o in MODEL_OPERATORS else DEFAULT_RADII.get(o, 0.0) for o in ops)
        else:
            items = (radius.split(",") if isinstance(radius, str)
                     else radius if isinstance(radius, (list, tuple)) else [radius])
            try:
                radii = tuple(float(r) for r in items)
            except (TypeError, ValueError):
                raise UsageError(f"--radius must be a number or comma-separated numbers, got {radius!r}") from None
        return cls("+".join(ops), radii, tuple(mutants))

    def resolve(self, x: Rows) -> Mutation:
        """The concrete mutation for inputs ``x`` (canonical NCHW): ``auto`` by channel count."""
        if self.operator != "auto":
            return self
        operator, radii = AUTO["grayscale" if x.ndim == 4 and x.shape[1] == 1 else "colour"]
        return Mutation(operator, radii, self.mutants)

    @property
    def radii(self) -> tuple[float, ...]:
        """The radius of each operator of the chain (or the model operator's rate)."""
        assert isinstance(self.radius, tuple)  # normalised in __post_init__
        return self.radius

    @property
    def steps(self) -> list[tuple[str, float]]:
        """The chain as ``(operator, radius)`` pairs, applied in order."""
        return list(zip(self.operator.split("+"), self.radii))

    @property
    def radius_text(self) -> str:
        """The radii as the command line writes them (``0.5,0.05``)."""
        return ",".join(f"{r:g}" for r in self.radii)

    @property
    def kind(self) -> str:
        """``model`` for a model operator (mutants of the network), ``input`` for input operators."""
        return "model" if self.operator in MODEL_OPERATORS else "input"

    def check(self) -> Mutation:
        """This mutation if its operators and radii are valid; a one-line :class:`UsageError` if not."""
        if self.operator == "auto":
            return self
        ops = self.operator.split("+")
        if not (len(ops) == 1 and ops[0] in MODEL_OPERATORS):
            bad = [o for o in ops if o not in MUTATORS]
            if bad:
                hint = (f"choose input operators ({', '.join(MUTATORS)}), chained with '+', "
                        f"or one model operator ({', '.join(MODEL_OPERATORS)})")
                raise UsageError(f"unknown mutation {bad[0]!r} in --mutation {self.operator}", hint)
        if len(self.radii) != len(ops):
            raise UsageError(
                f"--radius needs one value per operator of --mutation {self.operator} ({len(ops)}), "
                f"got {self.radius_text}",
                f"for example --radius {','.join(f'{DEFAULT_RADII.get(o, DEFAULT_RATE):g}' for o in ops)}",
            )
        for r in self.radii:
            if not 0 < r <= 1:
                raise UsageError(f"--radius must be in (0, 1] (a fraction of the value range or a rate), got {r:g}")
        return self

    def settings(self) -> dict[str, Any]:
        """The ``mutation`` section of calibration files and reports."""
        radius = None if not self.radii else self.radii[0] if len(self.radii) == 1 else list(self.radii)
        return {"operator": self.operator, "radius": radius, "kind": self.kind}
