"""``advaudit report``: render any advaudit JSON report as HTML, Markdown, JUnit XML or checked JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_OK, DataError
from ..report.render import FORMATS, render
from ..report.schema import validate_report
from ..report.writer import write_atomic
from ..safeio import parse_json, read_text
from .common import Output, check_outputs, output_options


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and check a report: a readable JSON file holding a valid ``advaudit.report/1`` document."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"report {p} is a folder", "give the report.json inside it")
    text = read_text(p, "report", missing=(
        f"report {p} does not exist", "give the report.json of 'advaudit audit' or a command's --report file"))
    try:
        report = parse_json(text, f"report {p}")
    except json.JSONDecodeError as exc:
        raise DataError(f"report {p} is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    validate_report(report)
    return report


@click.command("report")
@click.argument("report_path", metavar="REPORT.json", type=click.Path(dir_okay=True))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="html", show_default=True,
              help="html: one self-contained page; md: a pull-request comment; junit: one test case per gate and step; "
                   "json: the checked report.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write here (atomically) instead of stdout.")
@output_options
@click.pass_obj
def report(out: Output, report_path: str, fmt: str, out_path: str | None) -> int:
    """Render REPORT.json (from 'advaudit audit' or any command's --report) after checking it against the schema.

    \b
    advaudit report out/report.json --format html --out report.html
    advaudit report out/report.json --format md > comment.md
    advaudit report out/report.json --format junit --out junit.xml

    Image artifacts are read relative to REPORT.json's folder and embedded. Exit codes: 0 rendered,
    2 unreadable or invalid report (whatever the audit's verdict: 'advaudit audit' does the gating).
    """
    check_outputs({"--out": out_path}, inputs=[report_path])
    data = load_report(report_path)
    text = render(data, fmt, Path(report_path).resolve().parent)
    if out_path:
        write_atomic(out_path, lambda p: p.write_text(text, encoding="utf-8"))
        out.info(f"wrote {fmt} report {out_path}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return EXIT_OK
