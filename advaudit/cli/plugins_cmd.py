"""``advaudit plugins``: list registered components."""

from __future__ import annotations

import click
from rich.table import Table

from ..registry import get_registry
from .common import Output, output_options


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--kind", type=click.Choice(["attack", "defense", "detector", "backdoor-scanner"]),
              help="Only this kind.")
@output_options
@click.pass_obj
def plugins(out: Output, fmt: str, kind: str | None) -> None:
    """List built-in and third-party attacks, defences, detectors and backdoor scanners."""
    reg = get_registry()
    rows = [p for p in reg.plugins if kind is None or p.kind == kind]
    if fmt == "json":
        out.json(
            {
                "plugins": [{"name": p.name, "kind": p.kind, "origin": p.origin, "summary": p.summary} for p in rows],
                "broken": [{"name": p.name, "origin": p.origin, "target": p.target, "error": p.error}
                           for p in reg.broken],
            }
        )
        return
    table = Table(title="advaudit plugins")
    for col in ("name", "kind", "origin", "summary"):
        table.add_column(col)
    for p in rows:
        table.add_row(p.name, p.kind, p.origin + (" (built-in)" if p.builtin else ""), p.summary)
    out.out.print(table)
    if not rows:
        out.info("no plugins registered")
    for p in reg.broken:
        out.err.print(f"[yellow]broken plugin[/yellow] {p.name} ({p.origin}, {p.target}): {p.error}", highlight=False)
