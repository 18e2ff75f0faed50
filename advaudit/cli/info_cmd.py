"""``advaudit info``: describe a model and, with --data, measure clean accuracy and throughput."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..info import model_info
from .common import Output, output_options, data_options, model_options, open_data, open_model


@click.command()
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", type=click.Path(), help="Labelled data: clean accuracy and throughput.")
@model_options
@data_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@output_options
@click.pass_obj
def info(out: Output, data_path: str | None, fmt: str, **kw: Any) -> None:
    """Describe MODEL: format, input/output, input spec, gradients, classes; accuracy with --data."""
    out.info(f"loading {kw['model']} ...")
    model = open_model(kw)
    data = open_data(data_path, model, kw) if data_path else None
    result = model_info(model, data, batch_size=kw["batch_size"])
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
        rows.append(("runtime", "TorchScript (torch.jit)"))
    rows += [
        ("input shape (C,H,W)", _fmt(m["input_shape"])),
        ("fixed batch", _fmt(m["fixed_batch"]) + (f" (rewritten from {m['batch_rewritten_from']})" if m.get("batch_rewritten_from") else "")),
        ("classes", _fmt(m["num_classes"])),
        ("output kind", m["output_kind"]),
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
            ("data", f"{d['path']} ({d['format']}, n={d['n']})"),
            ("clean accuracy", f"{result['clean_accuracy']:.4f}"),
            ("throughput", f"{result['throughput_images_per_s']:.0f} images/s (batch {d['batch_size']})"),
        ]
    table = Table(title="advaudit info", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in rows:
        table.add_row(k, Text(v))
    return table
