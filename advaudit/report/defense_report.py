"""The report of ``advaudit attack --defense ...``: clean and robust accuracy per adaptive mode."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from ..data import PreparedData
from ..defenses.evaluate import MODES, DefenseEval
from ..models import Model
from .attack_report import markdown_tail
from .gates import Gate, evaluate_gates
from .writer import base_report, model_section


def defense_report(
    ev: DefenseEval, model: Model, data: PreparedData, command: list[str] | str, seed: int, gates: list[Gate]
) -> dict[str, Any]:
    """JSON report (schema ``advaudit.report/1``, kind ``attack``, with a ``defense`` section).

    ``clean_accuracy`` and ``robust_accuracy`` are those of the *defended* model; the robust figure
    is the lowest over the adaptive modes run (the honest one), and gates apply to it.
    """
    gate_results = evaluate_gates(gates, ev.clean_accuracy, ev.robust_by_eps)
    report = base_report(command, seed)
    report.update(
        {
            "kind": "attack",
            "model": model_section(model, search=True),
            "data": {**data.dataset.describe()},
            "norm": ev.norm,
            "eps": ev.eps,
            "targeted": None,
            "clean_accuracy": ev.clean_accuracy,
            "robust_accuracy": ev.robust_accuracy,
            "robust_accuracy_by_eps": {f"{e:g}": v for e, v in ev.robust_by_eps.items()},
            "defense": ev.to_dict(),
            "warnings": ev.warnings,
            "gates": gate_results,
            "passed": all(g["passed"] for g in gate_results),
        }
    )
    return report


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _table_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    modes = [m for m in MODES if m in d["modes"]]
    cols = ["attack", "eps", "undefended", "clean (defended)", *modes]
    rows: list[list[str]] = []
    keyed: dict[tuple[str, float], dict[str, float | None]] = {}
    for m in modes:
        for r in d["modes"][m]["results"]:
            keyed.setdefault((r["attack"], r["eps"]), {})[m] = r["robust_accuracy"]
            if m == "blind":
                keyed[(r["attack"], r["eps"])]["undefended"] = r.get("robust_accuracy_undefended")
    for (attack, e), vals in keyed.items():
        rows.append([attack, f"{e:g}", _pct(vals.get("undefended")), _pct(d["clean_accuracy"]), *(_pct(vals.get(m)) for m in modes)])
    und = d["robust_accuracy_undefended_by_eps"]
    for e in d["eps"]:
        key = f"{e:g}"
        rows.append([
            "worst case", key, _pct(und.get(key)) if und else "-", _pct(d["clean_accuracy"]),
            *(_pct(d["modes"][m]["robust_accuracy_by_eps"][key]) for m in modes),
        ])
    return cols, rows


def defense_table(report: dict[str, Any]) -> Table:
    d = report["defense"]
    draws = f", expected over {d['eval_draws']} seeded draws" if d["randomized"] else ""
    title = (
        f"advaudit attack --defense {d['spec']}: clean accuracy {_pct(d['clean_accuracy_undefended'])} undefended, "
        f"{_pct(d['clean_accuracy'])} defended; honest robust accuracy {_pct(d['robust_accuracy'])} "
        f"({d['norm']} eps {max(d['eps']):g}, n={d['n']}{draws})"
    )
    cols, rows = _table_rows(d)
    table = Table(title=title)
    for c in cols:
        table.add_column(c, justify="left" if c == "attack" else "right")
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    return table


def defense_markdown(report: dict[str, Any]) -> str:
    d = report["defense"]
    cols, rows = _table_rows(d)
    lines = [
        f"## advaudit attack --defense {d['spec']}: {report['model']['path']}",
        "",
        f"- clean accuracy: {_pct(d['clean_accuracy_undefended'])} undefended, **{_pct(d['clean_accuracy'])}** defended (n={d['n']})",
        f"- honest robust accuracy (lowest over {', '.join(d['modes'])}; {d['norm']} eps {max(d['eps']):g}): "
        f"**{_pct(d['robust_accuracy'])}**",
        f"- randomised: {'yes' if d['randomized'] else 'no'}; EOT samples {d['eot_samples']}; verification draws {d['eval_draws']}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines + markdown_tail(report)) + "\n"
