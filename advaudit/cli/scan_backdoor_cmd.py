"""``advaudit scan-backdoor``: model-level backdoor scan (Neural Cleanse, MM-BD, or all)."""

from __future__ import annotations

import sys
from typing import Any

import click
from click.core import ParameterSource
from rich.table import Table
from rich.text import Text

from ..backdoor.images import write_trigger_pngs
from ..backdoor.scan import method_names, scan_model
from ..checkpoint import ScanUnits, data_inputs, make_inputs
from ..data import default_batch_size
from ..errors import EXIT_GATE, EXIT_OK, UsageError
from ..registry import get_registry
from ..report.backdoor_report import scan_report
from .common import (
    Output, ProgressBar, check_outputs, data_options, model_options, open_data, open_model, output_options,
)
from .resume import check_resume, finish, interruptible, open_checkpoint, resume_option
from .sharding import recorded_command

DEFAULT_N = 300
NC_DEFAULT_BATCH = 32


@click.command("scan-backdoor")
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", type=click.Path(), help="Clean labelled images (100-500 is typical). Optional for data-free methods (mm-bd).")
@click.option("--method", default="neural-cleanse", show_default=True, metavar="neural-cleanse|mm-bd|NAME|all",
              help="Scanner to run ('advaudit plugins --kind backdoor-scanner'); 'all' runs every one.")
@click.option("--steps", type=click.IntRange(min=1), help="Optimisation steps (NC: max mini-batch steps, default 1000 with early stop; MM-BD: default 300).")
@click.option("--anomaly-threshold", type=click.FloatRange(min=0, min_open=True), help="Neural Cleanse's MAD anomaly index above which a label (with a norm below the median) is flagged. [default: 2, the paper's]")
@click.option("--triggers-dir", type=click.Path(file_okay=False), help="Write mask / pattern / mask*pattern PNGs per class and overview.png.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "md"]), default="table", show_default=True)
@click.option("--fail-on-backdoor", is_flag=True, help="Exit 1 on a 'backdoored' verdict (after writing the report).")
@resume_option
@model_options
@data_options
@output_options
@click.pass_context
def scan_backdoor(ctx: click.Context, **kw: Any) -> int:
    """Scan a model for a backdoor: reconstructed triggers per class, outlier test, verdict.

    \b
    advaudit scan-backdoor MODEL --data CLEAN [--method neural-cleanse|mm-bd|all] [--n 300]
        [--steps N] [--batch-size B] [--anomaly-threshold 2] [--seed S] [--triggers-dir DIR] [--report out.json]
        [--format table|json|md] [--fail-on-backdoor]

    --n defaults to 300 clean images; --batch-size is Neural Cleanse's mini-batch of clean images
    per step (default 32, fewer for inputs of over 262144 values). Exit codes: 0 clean (or no gate),
    1 backdoored with --fail-on-backdoor, 2 bad input, 130 interrupted.

    With --report, each finished scanner and, inside Neural Cleanse, the search state each time a
    label finishes are kept in REPORT.partial/; after Ctrl-C or a kill, --resume continues.
    """
    out: Output = ctx.obj
    check_resume(kw)
    check_outputs({"--report": kw["report_path"]}, {"--triggers-dir": kw["triggers_dir"]},
                  inputs=[kw["model"], kw["data_path"], kw["spec_file"]])
    methods = method_names(kw["method"])
    registry = get_registry()
    needs_data = any(registry.get("backdoor-scanner", m).min_per_class > 0 for m in methods)
    if kw["n"] is None:
        kw["n"] = DEFAULT_N
    batch_given = ctx.get_parameter_source("batch_size") != ParameterSource.DEFAULT
    params: dict[str, dict[str, Any]] = {m: {} for m in methods}
    if kw["steps"] is not None:
        for m in methods:
            params[m]["steps"] = kw["steps"]
    if "neural-cleanse" in params:
        if kw["anomaly_threshold"] is not None:
            params["neural-cleanse"]["anomaly_threshold"] = kw["anomaly_threshold"]
    elif kw["anomaly_threshold"] is not None:
        raise UsageError("--anomaly-threshold applies to neural-cleanse", "add --method neural-cleanse or --method all")
    if kw["data_path"] is None and needs_data:
        raise UsageError(f"--method {kw['method']} needs clean labelled images", "give them with --data")
    model = open_model(kw)
    data = open_data(kw["data_path"], model, kw, out=out) if kw["data_path"] else None
    if "neural-cleanse" in params:  # its default mini-batch, fewer for large inputs
        nc_batch = kw["batch_size"] if batch_given else default_batch_size(model.input_shape, NC_DEFAULT_BATCH)
        params["neural-cleanse"]["batch_size"] = int(nc_batch)
    seed = kw["seed"] if kw["seed"] is not None else 0
    return interruptible(kw["report_path"], lambda: _scan(out, kw, model, data, methods, params, seed))


def _scan(
    out: Output, kw: dict[str, Any], model: Any, data: Any, methods: list[str], params: dict[str, dict[str, Any]],
    seed: int,
) -> int:
    """Run the scan (checkpointed beside ``--report``), write the report and the trigger images."""
    inputs = make_inputs(
        "scan-backdoor", model, kw, seed, methods=methods, params=params,
        data=None if data is None else data_inputs(kw["data_path"], data.x, data.y),
    )
    ckpt = open_checkpoint(out, kw, "scan-backdoor", inputs)
    if data is not None:
        out.info(f"scanning {model.path.name} with {', '.join(methods)} on {len(data)} clean images")
    else:
        out.info(f"scanning {model.path.name} with {', '.join(methods)} (data-free)")
    with ProgressBar(out) as progress:
        scan = scan_model(
            model, None if data is None else data.x, None if data is None else data.y,
            methods=methods, params=params, seed=seed, progress=progress,
            units=None if ckpt is None else ScanUnits(ckpt),
        )
    command = ["advaudit", *recorded_command(sys.argv[1:])]
    report = scan_report(scan, model, data, command, seed, fail_on_backdoor=kw["fail_on_backdoor"])
    finish(ckpt, report, kw["resume"])
    if kw["triggers_dir"]:
        prim = scan.primary
        if prim.masks is None or prim.patterns is None:
            out.info("no trigger images: the method(s) run reconstruct no trigger")
        else:
            files = write_trigger_pngs(
                kw["triggers_dir"], prim.masks, prim.patterns, model.spec.range,
                l1=[c.mask_l1 or 0.0 for c in prim.classes], flagged=[c.flagged for c in prim.classes],
            )
            report["triggers_dir"] = kw["triggers_dir"]
            out.info(f"wrote {len(files)} trigger images to {kw['triggers_dir']}")
    out.report(kw["report_path"], report)
    if ckpt is not None:
        ckpt.finish()
    render(out, report, kw["fmt"])
    if kw["fail_on_backdoor"] and scan.verdict == "backdoored":
        return EXIT_GATE
    return EXIT_OK


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _columns(report: dict[str, Any]) -> list[tuple[str, str]]:
    cols = [("label", "label"), ("mask L1", "mask_l1"), ("anomaly index", "anomaly_index"), ("ASR", "asr")]
    if any("max_margin" in c for c in report["classes"]) or "mm-bd" in report["evidence"]:
        cols.append(("max margin", "max_margin"))
    cols.append(("flagged", "flagged"))
    return cols


def _rows(report: dict[str, Any]) -> list[list[str]]:
    mm = report["evidence"].get("mm-bd")
    rows = []
    for i, c in enumerate(report["classes"]):
        row = dict(c)
        if mm is not None and "max_margin" not in row:
            row["max_margin"] = mm["classes"][i]["max_margin"]
        rows.append([_fmt(row.get(key), ".2f" if key in ("mask_l1", "max_margin") else ".3f") for _, key in _columns(report)])
    return rows


def _summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, ev in report["evidence"].items():
        if name == "neural-cleanse":
            lines.append(f"neural-cleanse: {ev['verdict']}; median mask L1 {ev['median_l1']:.2f}, "
                         f"max anomaly index {_fmt(ev['max_anomaly_index'], '.2f')} (threshold {ev['anomaly_threshold']:g}); "
                         f"{ev['time_s']:.1f} s")
        elif name == "mm-bd":
            lines.append(f"mm-bd: {ev['verdict']}; largest max-margin {ev['top_margin']:.2f} (class {ev['top_class']}), "
                         f"p-value {ev['p_value']:.3g} (alpha {ev['alpha']:g}); {ev['time_s']:.1f} s")
        else:
            lines.append(f"{name}: {ev['verdict']}; {ev['time_s']:.1f} s")
    targets = ", ".join(map(str, report["suspected_targets"])) or "none"
    lines.append(f"verdict: {report['verdict'].upper()}; suspected target(s): {targets}; {report['time_s']:.1f} s")
    return lines


def render(out: Output, report: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        out.json(report)
        return
    cols = _columns(report)
    if fmt == "md":
        click.echo("| " + " | ".join(h for h, _ in cols) + " |")
        click.echo("|" + "---|" * len(cols))
        for r in _rows(report):
            click.echo("| " + " | ".join(r) + " |")
        click.echo("")
        for line in _summary_lines(report):
            click.echo(f"- {line}")
        return
    table = Table(title=f"advaudit scan-backdoor: {report['verdict']}")
    for h, _ in cols:
        table.add_column(h, justify="right")
    for r, c in zip(_rows(report), report["classes"]):
        table.add_row(*(Text(v, style="bold red" if c["flagged"] else "") for v in r))
    out.out.print(table)
    for line in _summary_lines(report):
        out.out.print(line, highlight=False)
