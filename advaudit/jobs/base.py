"""What every job shares: how to name a model and a data set, the process-local context a job runs
in, and the protocol of its result.

Options are frozen, keyword-only dataclasses of plain picklable values (paths as ``str``, numbers,
tuples): they cross process boundaries (``--workers``), go into checkpoint fingerprints and can be
compared for equality in tests.  A :class:`JobContext` holds what must not cross: callbacks, a
shard, a model already opened by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, Sequence

from ..progress import Progress, bound
from ..data.loaders import DEFAULT_MAX_INPUT_PIXELS

if TYPE_CHECKING:  # torch loads only when a job opens a model
    from ..gates import GateResult
    from ..data import PreparedData
    from ..distributed import Shard
    from ..models import Model

"""``progress(label, done, total)``: one progress bar per label."""

SpecValue = str | tuple[float, ...] | tuple[int, ...] | None
"""An input-spec override as the user wrote it: ``"0,1"`` on the command line, a tuple from Python."""


def _silent(message: str) -> None:
    """The default :attr:`JobContext.log`: say nothing."""


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Which model file to open and how: input-spec overrides (highest priority, see
    :mod:`advaudit.spec`), a YAML spec file, device, size limit and the attacks' search precision."""

    path: str
    spec_file: str | None = None
    range: SpecValue = None
    mean: SpecValue = None
    std: SpecValue = None
    layout: str | None = None
    input_shape: SpecValue = None
    device: str = "cpu"
    max_size_mb: float = 2048.0
    precision: str = "auto"

    def spec(self) -> dict[str, Any]:
        """The overrides as :func:`advaudit.models.load_model` takes them."""
        return {"range": self.range, "mean": self.mean, "std": self.std, "layout": self.layout,
                "input_shape": self.input_shape}

    def open(self, device: str | None = None, input_shape: Sequence[int] | None = None) -> Model:
        """Load the model (``device`` overrides :attr:`device`, e.g. a worker's GPU; ``input_shape``
        completes a model whose file leaves it open, see :func:`advaudit.models.load_model`)."""
        from ..models import load_model

        model = load_model(self.path, spec=self.spec(), spec_file=self.spec_file, device=device or self.device,
                           max_size_mb=self.max_size_mb, input_shape=input_shape)
        model.set_search_precision(self.precision)
        return model


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """Which samples to read: the file or folder, its format and labels, the subset (``n`` samples
    after ``offset``; with ``seed`` a stratified random sample, else the first ``n``) and the
    resize / centre-crop applied to each image."""

    path: str
    format: str | None = None
    labels: str | None = None
    n: int | None = None
    offset: int = 0
    seed: int | None = None
    resize: str | int | tuple[int, int] | None = None
    crop: str | int | tuple[int, int] | None = None
    max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS

    def load(self, model: Model, *, need_labels: bool = True,
             progress: Callable[[int, int], None] | None = None) -> PreparedData:
        """Read the samples, converted to the model's channel count, and prepare them for ``model``; a
        model whose file leaves the input shape open is completed with the samples' shape first."""
        from ..data import load_data, prepare
        from ..models import complete_input_shape

        shape = model.input_shape
        channels = shape[0] if shape is not None and len(shape) == 3 and shape[0] in (1, 3) else None
        ds = load_data(self.path, fmt=self.format, n=self.n, offset=self.offset, seed=self.seed,
                       labels_path=self.labels, resize=self.resize, crop=self.crop, channels=channels,
                       progress=progress, max_values=self.max_input_pixels)
        if len(ds) and not (need_labels and ds.y is None):  # else prepare refuses the data, as before
            complete_input_shape(model, ds.x.shape[1:])
        return prepare(ds, model, need_labels=need_labels)


def batch_size_for(batch_size: int | None, input_shape: Sequence[int] | None, base: int = 256) -> int:
    """A user's ``batch_size`` as given; ``None`` means "fit ``base`` to the input size"
    (:func:`advaudit.data.default_batch_size`)."""
    from ..data.batching import default_batch_size

    return int(batch_size) if batch_size is not None else default_batch_size(input_shape, base)


@dataclass
class JobContext:
    """Process-local: never pickled, never part of a fingerprint.

    ``progress`` drives progress bars; ``log`` gets one-line messages (the CLI prints them on
    stderr); ``shard`` is this process's share of a sharded run; ``model`` lets a caller that has
    already opened the model (the audit) lend it to the job."""

    progress: Progress | None = None
    log: Callable[[str], None] = _silent
    shard: Shard | None = None
    model: Model | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def bar(self, label: str) -> Callable[[int, int], None] | None:
        """``progress`` as the two-argument ``(done, total)`` callback of one bar."""
        return bound(self.progress, label)


def open_inputs(model: ModelOptions, data: DataOptions | None, ctx: JobContext, *, need_labels: bool = True,
                device: str | None = None) -> tuple[Model, PreparedData | None]:
    """The one place a job opens its model and data: the context's model if it lends one, else the
    file; then the data (if any) prepared for it, with a progress bar while images decode."""
    opened = ctx.model if ctx.model is not None else model.open(device)
    if data is None:
        return opened, None
    label = f"loading {data.path.rsplit('/', 1)[-1]}"
    return opened, data.load(opened, need_labels=need_labels, progress=ctx.bar(label))


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    """The fields every command's options share: the model, where the JSON report goes (None: not
    written), the seed, and the command line the report records (each command sets its own default)."""

    model: ModelOptions
    report: str | None = None
    seed: int = 0
    command: str = "advaudit"


def new_meta() -> dict[str, Any]:
    """A report's ``meta`` section (versions, creation time), made once when a job finishes so that
    every :meth:`to_report` of its result returns the same document."""
    from ..report.writer import versions

    return {**versions(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def report_head(command: str, seed: int | None, meta: dict[str, Any]) -> dict[str, Any]:
    """The keys every report starts with, in order: ``schema``, ``command``, ``seed``, ``meta``."""
    from ..report.writer import SCHEMA

    return {"schema": SCHEMA, "command": command, "seed": seed, "meta": dict(meta)}


class Ungated:
    """``passed`` for results of jobs that decide no gates (harden, repair)."""

    @property
    def passed(self) -> bool:
        """Always True: nothing to fail."""
        return True


class Gated:
    """``passed`` for results whose ``gates`` are :class:`~advaudit.gates.GateResult` (scan, audit)."""

    gates: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        """True when every gate passed (and when there are none)."""
        return all(g.passed for g in self.gates)


@dataclass(kw_only=True)
class RunRecord:
    """What a single-command report records around its figures (attack, defence): the model and data
    sections, the command line, the seed, the gates decided (``{"name", "passed", ...}``) and ``meta``."""

    model: dict[str, Any]
    data: dict[str, Any]
    command: str
    seed: int
    gates: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=new_meta)

    @property
    def passed(self) -> bool:
        """True when every gate passed (and when there are none)."""
        return all(g["passed"] for g in self.gates)

    def report_start(self, kind: str) -> dict[str, Any]:
        """The report's first keys: :func:`report_head`, then ``kind``, ``model`` and ``data``."""
        return {**report_head(self.command, self.seed, self.meta), "kind": kind, "model": self.model, "data": self.data}


class JobResult(Protocol):
    """What every job returns."""

    kind: ClassVar[str]  # the report kind: attack, defense, scan-backdoor, detect, ...

    def metrics(self) -> dict[str, Any]:
        """Flat named figures (``clean_accuracy``, ``robust_accuracy@0.1``, ``verdict``, ...): what
        gates and the audit read, computed from the result's fields."""
        ...

    def to_report(self) -> dict[str, Any]:
        """The ``advaudit.report/1`` JSON document the command's ``--report`` writes."""
        ...

    @property
    def passed(self) -> bool:
        """True when every gate of the job passed (and when it has none)."""
        ...
