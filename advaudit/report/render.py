"""One report pipeline: every output format is a renderer ``(report, base_dir) -> str`` over the report
alone, registered here by name; :func:`render` is the one entry point (``advaudit report``, the audit's
``--format``, the commands' ``--format`` and Python callers all use it).

=========  =====================================================================================
format     renderer
=========  =====================================================================================
``html``   :func:`advaudit.report.html.render_html`: one self-contained page (images embedded)
``md``     :func:`advaudit.report.markdown.render_markdown`: a summary for CI pages and reviews
``junit``  :func:`advaudit.report.junit.render_junit`: each gate (and step) as a JUnit test case
``json``   the report itself, indented
``table``  :func:`advaudit.report.table.render_table`: the terminal tables, as plain text
=========  =====================================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol


class Renderer(Protocol):
    """A report format: the text of ``report`` (any kind); files it names resolve against ``base_dir``."""

    def __call__(self, report: dict[str, Any], base_dir: Path) -> str: ...


def _html(report: dict[str, Any], base_dir: Path) -> str:
    from .html import render_html

    return render_html(report, base_dir)


def _md(report: dict[str, Any], base_dir: Path) -> str:
    from .markdown import render_markdown

    return render_markdown(report)


def _junit(report: dict[str, Any], base_dir: Path) -> str:
    from .junit import render_junit

    return render_junit(report)


def _json(report: dict[str, Any], base_dir: Path) -> str:
    return json.dumps(report, indent=2) + "\n"


def _table(report: dict[str, Any], base_dir: Path) -> str:
    from .table import render_table

    return render_table(report)


RENDERERS: dict[str, Renderer] = {"html": _html, "md": _md, "junit": _junit, "json": _json, "table": _table}
"""The renderers by format name (imported lazily: rendering one format loads only its module)."""
FORMATS = tuple(RENDERERS)



def render(report: dict[str, Any], fmt: str, base_dir: str | Path = ".") -> str:
    """``report`` (any kind) in ``fmt``, one of :data:`FORMATS`."""
    if fmt not in RENDERERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return RENDERERS[fmt](report, Path(base_dir))
