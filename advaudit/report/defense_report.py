"""The report of ``advaudit attack --defense ...`` as a terminal table and Markdown: clean and robust
accuracy per adaptive mode (the JSON document is :meth:`advaudit.jobs.defend.DefendResult.to_report`)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from .attack_report import markdown_tail
from .fmt import defense_rows, pct

__all__ = ["defense_markdown", "defense_table"]


def defense_table(report: dict[str, Any]) -> Table:
    d = report["defense"]
    draws = f", expected over {d['eval_draws']} seeded draws" if d["randomized"] else ""
    title = (
        f"advaudit attack --defense {d['spec']}: clean accuracy {pct(d['clean_accuracy_undefended'])} undefended, "
        f"{pct(d['clean_accuracy'])} defended; honest robust accuracy {pct(d['robust_accuracy'])} "
        f"({d['norm']} eps {max(d['eps']):g}, n={d['n']}{draws})"
    )
    cols, rows = defense_rows(d)
    table = Table(title=title)
    for c in cols:
        table.add_column(c, justify="left" if c == "attack" else "right")
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    return table


def defense_markdown(report: dict[str, Any]) -> str:
    d = report["defense"]
    cols, rows = defense_rows(d)
    lines = [
        f"## advaudit attack --defense {d['spec']}: {report['model']['path']}",
        "",
        f"- clean accuracy: {pct(d['clean_accuracy_undefended'])} undefended, **{pct(d['clean_accuracy'])}** defended "
        f"(n={d['n']})",
        f"- honest robust accuracy (lowest over {', '.join(d['modes'])}; {d['norm']} eps {max(d['eps']):g}): "
        f"**{pct(d['robust_accuracy'])}**",
        f"- randomised: {'yes' if d['randomized'] else 'no'}; EOT samples {d['eot_samples']}; verification draws "
        f"{d['eval_draws']}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines + markdown_tail(report)) + "\n"
