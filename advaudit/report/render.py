"""One entry point for every output format of a report: ``render(report, fmt, base_dir)``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMATS = ("html", "md", "junit", "json")


def render(report: dict[str, Any], fmt: str, base_dir: str | Path = ".") -> str:
    """``report`` (any kind) as ``html`` (self-contained, images from ``base_dir`` embedded), ``md``,
    ``junit`` (XML) or ``json``."""
    if fmt == "html":
        from .html import render_html

        return render_html(report, Path(base_dir))
    if fmt == "md":
        from .markdown import render_markdown

        return render_markdown(report)
    if fmt == "junit":
        from .junit import render_junit

        return render_junit(report)
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
