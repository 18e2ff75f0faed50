"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click
from rich.console import Console

from ..data import PreparedData, load_data, prepare
from ..data.loaders import FORMATS
from ..report.writer import write_json

if TYPE_CHECKING:  # torch loads only when a command opens a model (advaudit report never does)
    from ..models import Model

F = TypeVar("F", bound=Callable[..., Any])


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


def compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def _set_quiet(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(Output).quiet = True


def _set_verbose(ctx: click.Context, _: click.Parameter, value: int) -> None:
    if value:
        ctx.find_object(Output).verbose += value


# -q/-v work before the subcommand (global) and after it.
output_options = compose(
    click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet, help="Results only, no progress or messages."),
    click.option("-v", "--verbose", count=True, expose_value=False, callback=_set_verbose, help="More detail on stderr."),
)

model_options = compose(
    click.option("--spec", "spec_file", type=click.Path(dir_okay=False), help="YAML input spec (range, mean, std, layout, class_names, input_shape)."),
    click.option("--range", "value_range", metavar="LO,HI", help="Value range of the model's natural inputs, e.g. 0,1 or 0,255."),
    click.option("--mean", metavar="M[,M,M]", help="Per-channel mean the model subtracts (normalisation done by advaudit)."),
    click.option("--std", metavar="S[,S,S]", help="Per-channel std the model divides by."),
    click.option("--layout", type=click.Choice(["nchw", "nhwc"]), help="Layout the model expects (default: inferred)."),
    click.option("--input-shape", metavar="C,H,W", help="Input shape, for models that do not declare it (TorchScript)."),
    click.option("--device", default="cpu", show_default=True, help="cpu, or cuda (ONNX Runtime CUDA provider and torch on GPU)."),
    click.option("--max-model-size", default=2048.0, show_default=True, type=float, metavar="MB", help="Refuse model files larger than this."),
)

data_options = compose(
    click.option("--data-format", type=click.Choice(FORMATS), help="Data format (default: from the path; cifar10-batch only when named)."),
    click.option("--labels", "labels_path", type=click.Path(dir_okay=False), help="IDX labels file (default: the sibling *labels-idx1* file)."),
    click.option("--n", "n", type=int, help="Use at most N samples."),
    click.option("--offset", default=0, show_default=True, type=int, help="Skip the first OFFSET samples."),
    click.option("--seed", type=int, help="Random seed; with --n, picks a stratified random sample."),
    click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1), help="Batch size."),
)


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
        max_size_mb=kw.get("max_model_size") or 2048.0,
    )
    model.set_search_precision(kw.get("precision") or "auto")
    return model


def open_data(path: str, model: Model, kw: dict[str, Any], need_labels: bool = True) -> PreparedData:
    ds = load_data(
        path,
        fmt=kw.get("data_format"),
        n=kw.get("n"),
        offset=kw.get("offset") or 0,
        seed=kw.get("seed"),
        labels_path=kw.get("labels_path"),
    )
    return prepare(ds, model, need_labels=need_labels)
