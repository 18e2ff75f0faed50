"""``advaudit info``: describe a model and, with --data, measure clean accuracy and throughput."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..data import resolve_batch_size
from ..info import model_info
from ..progress import bound
from .common import (
    Output, ProgressBar, data_options, model_options, data_options_from, open_model, output_options,
)


@click.command()
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", type=click.Path(), help="Labelled data: clean accuracy and throughput.")
@model_options
@data_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@output_options
@click.pass_obj
def info(out: Output, data_path: str | None, fmt: str, **kw: Any) -> None:
    """Describe MODEL: format, input/output, input shape, classes, parameters, input spec, gradients;
    clean accuracy and throughput with --data."""
    out.info(f"loading {kw['model']} ...")
    model = open_model(kw)
    data = None
    with ProgressBar(out) as progress:
        if data_path:
            loading = bound(progress, f"loading {Path(data_path).name}")
            data = data_options_from(kw, data_path).load(model, progress=loading)
            kw["batch_size"] = resolve_batch_size(kw["batch_size"], model.input_shape)
        result = model_info(model, data, batch_size=kw["batch_size"], progress=bound(progress, "clean accuracy"))
    if fmt == "json":
        out.json(result)
        return
    out.out.print(_table(result))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return "-" if v is None else str(v)


def _transform(t: dict[str, Any] | None) -> str:
    """``, resize 256, crop 224`` for a data set loaded with --resize/--crop."""
    if not t:
        return ""
    return "".join(f", {k} {','.join(map(str, t[k]))}" for k in ("resize", "crop") if t.get(k))


def _params(count: int | None, source: str | None) -> str:
    """``11,689,512 (11.7M; torch module)``."""
    if count is None:
        return "-"
    short = f"{count / 1e9:.3g}G" if count >= 1e9 else f"{count / 1e6:.3g}M" if count >= 1e6 else f"{count / 1e3:.3g}k"
    return f"{count:,} ({short}; {source})" if count >= 1000 else f"{count} ({source})"


def _table(result: dict[str, Any]) -> Table:
    m = result["model"]
    spec = m["spec"]
    grads = m["gradients"]
    rows: list[tuple[str, str]] = [("path", m["path"]), ("sha256", m["sha256"]), ("format", m["format"])]
    if m["format"] == "onnx":
        rows += [
            ("opset", _fmt(m.get("opset"))),
            ("producer", m.get("producer") or "-"),
            ("input", f"{m['input_name']} {_fmt(m['input_dims'])} {m['input_dtype']}"),
            ("output", _fmt(m["output_dims"])),
        ]
    else:
        rows.append(("runtime", "torch.export (ExportedProgram.module())" if m["format"] == "torch.export"
                     else "TorchScript (torch.jit)"))
    rows += [
        ("input shape (C,H,W)", _fmt(m["input_shape"])),
        ("fixed batch", _fmt(m["fixed_batch"])
         + (f" (rewritten from {m['batch_rewritten_from']})" if m.get("batch_rewritten_from") else "")),
        ("classes", _fmt(m["num_classes"])),
        ("parameters", _params(m.get("parameters"), m.get("parameters_source"))),
        ("output kind", m["output_kind"] + (f", from {m['logits_from']}" if m.get("logits_from") else "")),
        ("value range", f"{_fmt(spec['range'])} ({spec['source'].get('range')})"),
        ("mean / std", f"{_fmt(spec['mean'])} / {_fmt(spec['std'])} ({spec['source'].get('mean')})"),
        ("layout", f"{spec['layout']} ({spec['source'].get('layout')})"),
        ("gradients", ("yes: " + grads["source"]) if grads["available"] else ("no: " + grads["note"])),
    ]
    sp = m.get("search_precision") or {}
    if sp.get("used"):
        rows.append(("attack search precision", sp["used"] + (f" ({sp['note']})" if sp.get("note") else "")))
    if grads["max_abs_diff"] is not None and m["format"] == "onnx":
        rows.append(("twin max abs diff", f"{grads['max_abs_diff']:.3g}"))
    if spec.get("class_names"):
        names = spec["class_names"]
        rows.append(("class names", ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")))
    if "clean_accuracy" in result:
        d = result["data"]
        rows += [
            ("data", f"{d['path']} ({d['format']}, n={d['n']}{_transform(d.get('transform'))})"),
            ("clean accuracy", f"{result['clean_accuracy']:.4f}"),
            ("throughput", f"{result['throughput_images_per_s']:.0f} images/s (batch {d['batch_size']})"),
        ]
    table = Table(title="advaudit info", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in rows:
        table.add_row(k, Text(v))
    return table
