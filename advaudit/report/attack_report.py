"""The ``advaudit attack`` report as a terminal table and Markdown (the JSON document is
:meth:`advaudit.jobs.attack.AttackResult.to_report`)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

__all__ = ["attack_markdown", "attack_table", "markdown_tail"]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


COLUMNS = ("attack", "eps", "robust acc", "success", "verified", "Linf mean/med", "L2 mean/med", "queries", "time s")


def _rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [
            r["attack"],
            f"{r['eps']:g}",
            _pct(r["robust_accuracy"]),
            _pct(r["success_rate"]),
            f"{r['verified']}/{r['attacked']}",
            f"{_num(r['mean_linf'])}/{_num(r['median_linf'])}",
            f"{_num(r['mean_l2'])}/{_num(r['median_l2'])}",
            f"{r['mean_queries']:.0f}",
            f"{r['time_s']:.1f}",
        ]
        for r in report["results"]
    ]


def attack_table(report: dict[str, Any]) -> Table:
    title = (
        f"advaudit attack: clean accuracy {_pct(report['clean_accuracy'])}, "
        f"robust accuracy {_pct(report['robust_accuracy'])} (worst case, {report['norm']} eps {max(report['eps']):g}, "
        f"n={report['data']['n']})"
    )
    table = Table(title=title)
    for c in COLUMNS:
        table.add_column(c, justify="left" if c == "attack" else "right")
    for row in _rows(report):
        table.add_row(*(Text(c) for c in row))
    return table


def attack_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"## advaudit attack: {report['model']['path']}",
        "",
        f"- clean accuracy: **{_pct(report['clean_accuracy'])}** (n={report['data']['n']})",
        f"- robust accuracy (per-sample worst case, {report['norm']} eps {max(report['eps']):g}): "
        f"**{_pct(report['robust_accuracy'])}**",
        f"- model sha256: `{report['model']['sha256']}`; seed {report['seed']}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(report)]
    return "\n".join(lines + markdown_tail(report)) + "\n"


def markdown_tail(report: dict[str, Any]) -> list[str]:
    """The warnings and the ``--fail-under`` gates of an attack report, as Markdown lines."""
    lines: list[str] = []
    if report["warnings"]:
        lines += ["", "**Warnings**", ""] + [f"- {w}" for w in report["warnings"]]
    if report["gates"]:
        lines += ["", "| gate | threshold | value | result |", "|---|---|---|---|"]
        lines += [
            f"| {g['metric']} | {g['threshold']:g} | {g['value']:.4f} | {'pass' if g['passed'] else '**FAIL**'} |"
            for g in report["gates"]
        ]
    return lines
