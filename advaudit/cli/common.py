"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..data import AutoBatchSize
from ..data.batching import VALUES_PER_BATCH
from ..data.loaders import DEFAULT_MAX_INPUT_PIXELS, FORMATS, LABELS_FROM_NAME
from ..errors import UsageError
from ..report.writer import write_json

if TYPE_CHECKING:  # torch loads only when a command opens a model (advaudit report never does)
    from ..jobs import DataOptions, ModelOptions
    from ..models import Model

F = TypeVar("F", bound=Callable[..., Any])

MAX_SEED = 2**32 - 1
"""Largest --seed: numpy and torch take it, with room for the offsets derived seeds add."""


@dataclass
class Output:
    """Where a command writes: results to stdout, messages and progress to stderr."""

    quiet: bool = False
    verbose: int = 0

    def __post_init__(self) -> None:
        # Off a terminal (CI logs, pipes) rich would wrap tables at 80 columns: allow wider lines.
        self.out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
        self.err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, highlight=False)

    def debug(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self.err.print(f"[dim]{message}[/dim]", highlight=False)

    def report(self, path: str | None, report: dict[str, Any]) -> None:
        """Write ``report`` as JSON to ``path`` (atomically), if a path was given, and say so."""
        if path:
            write_json(path, report)
            self.info(f"wrote report {path}")

    def json(self, payload: Any) -> None:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def check_outputs(
    files: dict[str, Any] | None = None, folders: dict[str, Any] | None = None, inputs: Iterable[Any] = ()
) -> None:
    """Refuse, before any work, output paths a run could not write or should not: a file path that is a
    folder (or a folder path that is a file), one below a file, one in a folder that cannot be written,
    one that is also an input (``--report`` over the ``--data`` file) or names the same path as another
    output.  ``files`` / ``folders`` map an option (``--report``) to its value (None: not given); creates
    nothing, so a refused command leaves no trace.  Raises a one-line :class:`UsageError`."""
    import os
    import stat

    def resolved(option: str, path: Any) -> Path:
        try:
            return Path(path).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
            raise UsageError(f"cannot write {option} {str(path)[:200]}: {exc}") from None

    ins: dict[Path, str] = {}
    for item in inputs:
        if item:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                ins[Path(item).resolve()] = str(item)
    seen: dict[Path, str] = {}
    for is_dir, table in ((False, files or {}), (True, folders or {})):
        for option, path in table.items():
            if not path:
                continue
            with contextlib.suppress(OSError, ValueError):
                if not (stat.S_ISREG(os.stat(path).st_mode) or stat.S_ISDIR(os.stat(path).st_mode)):
                    continue  # a FIFO or device (--out /dev/stdout): written to as it is
            target = resolved(option, path)
            if target in ins:
                raise UsageError(f"{option} {path} is also an input ({ins[target]})",
                                 "write the output to another path")
            if target in seen:
                raise UsageError(f"{option} and {seen[target]} name the same path {path}",
                                 "give each output its own path")
            seen[target] = option
            if not is_dir and target.is_dir():
                raise UsageError(f"{option} {path} is a folder", "give a file path")
            if is_dir and target.exists() and not target.is_dir():
                raise UsageError(f"{option} {path} is a file", "give a folder")
            parent = target.parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            if not parent.is_dir():
                raise UsageError(f"cannot write {option} {path}: {parent} is not a folder", "give a path in a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"cannot write {option} {path}: {parent} is not writable",
                                 "give a path you can write to")


def compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def _set_quiet(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Output).quiet = True


def _set_verbose(ctx: click.Context, _: click.Parameter, value: int) -> None:
    if value:
        ctx.ensure_object(Output).verbose += value


# -q/-v work before the subcommand (global) and after it.
output_options = compose(
    click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet,
                 help="Results only, no progress or messages."),
    click.option("-v", "--verbose", count=True, expose_value=False, callback=_set_verbose,
                 help="More detail on stderr."),
)

model_options = compose(
    click.option("--spec", "spec_file", type=click.Path(dir_okay=False),
                 help="YAML input spec (range, mean, std, layout, class_names, input_shape)."),
    click.option("--range", "value_range", metavar="LO,HI",
                 help="Value range of the model's natural inputs, e.g. 0,1 or 0,255."),
    click.option("--mean", metavar="M[,M,M]",
                 help="Per-channel mean the model subtracts (normalisation done by advaudit)."),
    click.option("--std", metavar="S[,S,S]", help="Per-channel std the model divides by."),
    click.option("--layout", type=click.Choice(["nchw", "nhwc"]), help="Layout the model expects (default: inferred)."),
    click.option("--input-shape", metavar="C,H,W",
                 help="Input shape, for models that do not declare it (TorchScript)."),
    click.option("--device", default="cpu", show_default=True,
                 help="cpu, or cuda (ONNX Runtime CUDA provider and torch on GPU)."),
    click.option("--max-model-size", default=2048.0, show_default=True, type=float, metavar="MB",
                 help="Refuse model files larger than this."),
)


def _batch_size(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """Mark the default so commands can fit it to the input size (see :mod:`advaudit.data.batching`)."""
    if param.name and ctx.get_parameter_source(param.name) == ParameterSource.DEFAULT:
        return AutoBatchSize(value)
    return value


BATCH_HELP = (
    f"Batch size. [default: 256; for inputs of over {VALUES_PER_BATCH // 256} values the largest power of two "
    f"within {VALUES_PER_BATCH // 2**20}M input values per batch: 32 for 3x224x224]"
)

LABELS_HELP = (
    "IDX labels file (default: the sibling *labels-idx1* file). For a flat folder of images: a FILE LABEL list, "
    f"or '{LABELS_FROM_NAME}' (the number after the last _ of each name: imagenet_03_990.jpg is 990)."
)
RESIZE_HELP = (
    "Resize each image first: the shorter side to S keeping the aspect ratio (bilinear, antialiased, as "
    "torchvision's Resize), or to exactly H,W."
)
CROP_HELP = (
    "Then cut out the central SxS (or HxW) pixels, as torchvision's CenterCrop. ImageNet: --resize 256 --crop 224."
)
MAX_PIXELS_HELP = (
    "Refuse inputs that would decode to more values (pixels x channels) than this: any one image or sample, "
    "and any array read into memory whole (compressed .npz, IDX, decoded images); checked before decoding. "
    f"Uncompressed .npz files are memory-mapped: only their per-sample size counts. [default: 2**28 = "
    f"{DEFAULT_MAX_INPUT_PIXELS:,}]"
)

# Which samples to read and how to decode them (commands that batch their own queries take only these).
data_selection_options = compose(
    click.option("--data-format", type=click.Choice(FORMATS),
                 help="Data format (default: from the path; cifar10-batch only when named)."),
    click.option("--labels", "labels_path", type=click.Path(dir_okay=False), help=LABELS_HELP),
    click.option("--n", "n", type=int, help="Use at most N samples."),
    click.option("--offset", default=0, show_default=True, type=int, help="Skip the first OFFSET samples."),
    click.option("--seed", type=click.IntRange(0, MAX_SEED),
                 help="Random seed; with --n, picks a stratified random sample."),
    click.option("--resize", metavar="S|H,W", help=RESIZE_HELP),
    click.option("--crop", metavar="S|H,W", help=CROP_HELP),
    click.option("--max-input-pixels", "max_input_pixels", default=DEFAULT_MAX_INPUT_PIXELS, type=click.IntRange(min=1),
                 metavar="N", help=MAX_PIXELS_HELP),
)

# ... and the batch size of the commands that run the model in user-sized batches.
data_options = compose(
    data_selection_options,
    click.option("--batch-size", default=256, type=click.IntRange(min=1), callback=_batch_size, help=BATCH_HELP),
)


class ProgressBar:
    """A rich progress bar on stderr (silent with --quiet): ``with ProgressBar(out) as progress:``
    gives the ``progress(label, done, total)`` callback of the attack runner, the backdoor scanners
    and the audit (None when quiet); one bar per label."""

    def __init__(self, out: Output) -> None:
        self.bar = None if out.quiet else Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=out.err, transient=True,
        )
        self.tasks: dict[str, Any] = {}
        self.started = False

    def __enter__(self) -> Callable[[str, int, int], None] | None:
        return None if self.bar is None else self.update

    def update(self, label: str, done: int, total: int) -> None:
        """Show ``done`` of ``total`` on the bar named ``label`` (made on first use; the display
        starts with the first update, so work that reports nothing leaves nothing on stderr)."""
        if self.bar is None:
            return
        if not self.started:
            self.bar.__enter__()
            self.started = True
        if label not in self.tasks:
            self.tasks[label] = self.bar.add_task(label, total=max(total, 1))
        self.bar.update(self.tasks[label], completed=done if total else 1)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None and self.started:
            self.bar.__exit__(*exc)


def open_model(kw: dict[str, Any]) -> Model:
    from ..models import load_model

    spec = {
        "range": kw.get("value_range"),
        "mean": kw.get("mean"),
        "std": kw.get("std"),
        "layout": kw.get("layout"),
        "input_shape": kw.get("input_shape"),
    }
    model = load_model(
        kw["model"],
        spec=spec,
        spec_file=kw.get("spec_file"),
        device=kw.get("device") or "cpu",
        max_size_mb=2048.0 if kw.get("max_model_size") is None else kw["max_model_size"],
    )
    model.set_search_precision(kw.get("precision") or "auto")
    return model


def max_input_pixels(kw: dict[str, Any]) -> int:
    """``--max-input-pixels`` from a command's options (the default where a command has none)."""
    return int(kw.get("max_input_pixels") or DEFAULT_MAX_INPUT_PIXELS)


def model_options_from(kw: dict[str, Any]) -> ModelOptions:
    """The :class:`~advaudit.jobs.ModelOptions` a command's ``model_options`` (and ``--precision``) give."""
    from ..jobs import ModelOptions

    return ModelOptions(
        path=str(kw["model"]), spec_file=kw.get("spec_file"), range=kw.get("value_range"), mean=kw.get("mean"),
        std=kw.get("std"), layout=kw.get("layout"), input_shape=kw.get("input_shape"),
        device=kw.get("device") or "cpu",
        max_size_mb=2048.0 if kw.get("max_model_size") is None else float(kw["max_model_size"]),
        precision=kw.get("precision") or "auto",
    )


def data_options_from(kw: dict[str, Any], path: str) -> DataOptions:
    """The :class:`~advaudit.jobs.DataOptions` for ``path`` with a command's ``data_options``."""
    from ..jobs import DataOptions

    return DataOptions(
        path=str(path), format=kw.get("data_format"), labels=kw.get("labels_path"), n=kw.get("n"),
        offset=kw.get("offset") or 0, seed=kw.get("seed"), resize=kw.get("resize"), crop=kw.get("crop"),
        max_input_pixels=max_input_pixels(kw),
    )


def batch_size_option(kw: dict[str, Any]) -> int | None:
    """``--batch-size`` for a job's options: None when the user gave none (the job fits the default)."""
    value = kw.get("batch_size")
    return None if value is None or isinstance(value, AutoBatchSize) else int(value)


def print_report(out: Output, report: dict[str, Any], fmt: str) -> None:
    """A command's report on stdout in ``fmt`` (``json``, ``md``, or ``table``: the terminal tables of
    :mod:`advaudit.report.table`, with colour where the terminal has it); its warnings on stderr."""
    if fmt == "json":
        out.json(report)
        return
    if fmt == "md":
        from ..report.render import render

        text = render(report, "md")
        click.echo(text, nl=not text.endswith("\n"))
        return
    from ..report.table import table_parts

    for part in table_parts(report):
        out.out.print(part, highlight=False)
    for w in report.get("warnings") or []:
        out.err.print(f"[yellow]warning:[/yellow] {w}", highlight=False)


def run_model_job(out: Output, kw: dict[str, Any], out_path: str, job: Callable[..., Any], options: Any) -> int:
    """For the commands that write a trained copy of MODEL (harden, repair): refuse outputs that would
    overwrite an input, run ``job`` with a progress bar, print its report in ``--format``."""
    from .. import api

    check_outputs({"--out": out_path, "--report": kw["report_path"]},
                  inputs=[kw["model"], kw["data_path"], kw["eval_path"], kw["spec_file"]])
    with ProgressBar(out) as progress:
        result = job(options, api.JobContext(progress=progress, log=out.info))
    print_report(out, result.to_report(), kw["fmt"])
    return 0  # the jobs that write a model decide no gates
