"""The terminal rendering of any advaudit report: rich tables and summary lines, one function per kind.

:func:`table_parts` gives the renderables a console prints (the CLI prints them with colour where the
terminal has it); :func:`render_table` gives the same as plain text, the ``table`` format of
:func:`advaudit.report.render.render`.  Like every renderer it reads only the report.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from .fmt import defense_rows, pct, repair_rows, scan_combination, scan_evidence


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def _cell(v: Any, spec: str = ".3f") -> str:
    """A table cell: '-' for missing, 'yes' or blank for flags, floats in ``spec``."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _table(title: str, columns: tuple[str, ...] | list[str], left: tuple[str, ...] = ()) -> Table:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c in left else "right")
    return table


# --- attack and attack --defense ---------------------------------------------------------------------------

ATTACK_COLUMNS = ("attack", "eps", "robust acc", "success", "verified", "Linf mean/med", "L2 mean/med", "queries",
                  "time s")


def _gate_lines(report: dict[str, Any]) -> list[RenderableType]:
    """``--fail-under`` gates, one line each."""
    return [
        f"gate {g['metric']} >= {g['threshold']:g}: {g['value']:.4f} "
        + ("[green]pass[/green]" if g["passed"] else "[red]FAIL[/red]")
        for g in report.get("gates") or []
    ]


def attack_parts(report: dict[str, Any]) -> list[RenderableType]:
    """Clean and worst-case robust accuracy in the title, one row per attack x eps, then the gates."""
    title = (
        f"advaudit attack: clean accuracy {pct(report['clean_accuracy'])}, "
        f"robust accuracy {pct(report['robust_accuracy'])} (worst case, {report['norm']} eps {max(report['eps']):g}, "
        f"n={report['data']['n']})"
    )
    table = _table(title, ATTACK_COLUMNS, left=("attack",))
    for r in report["results"]:
        table.add_row(*(Text(c) for c in (
            r["attack"], f"{r['eps']:g}", pct(r["robust_accuracy"]), pct(r["success_rate"]),
            f"{r['verified']}/{r['attacked']}", f"{_num(r['mean_linf'])}/{_num(r['median_linf'])}",
            f"{_num(r['mean_l2'])}/{_num(r['median_l2'])}", f"{r['mean_queries']:.0f}", f"{r['time_s']:.1f}",
        )))
    return [table, *_gate_lines(report)]


def defense_parts(report: dict[str, Any]) -> list[RenderableType]:
    """Clean accuracy with and without the defence, robust accuracy per adaptive mode, then the gates."""
    d = report["defense"]
    draws = f", expected over {d['eval_draws']} seeded draws" if d["randomized"] else ""
    title = (
        f"advaudit attack --defense {d['spec']}: clean accuracy {pct(d['clean_accuracy_undefended'])} undefended, "
        f"{pct(d['clean_accuracy'])} defended; honest robust accuracy {pct(d['robust_accuracy'])} "
        f"({d['norm']} eps {max(d['eps']):g}, n={d['n']}{draws})"
    )
    cols, rows = defense_rows(d)
    table = _table(title, cols, left=("attack",))
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    return [table, *_gate_lines(report)]


# --- scan-backdoor ------------------------------------------------------------------------------------------

def _scan_columns(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(header, class key) of the per-class table; max margin only where MM-BD ran, the tendency only
    where FreeEagle ran."""
    cols = [("label", "label"), ("mask L1", "mask_l1"), ("anomaly index", "anomaly_index"), ("ASR", "asr")]
    if any("max_margin" in c for c in report["classes"]) or "mm-bd" in report["evidence"]:
        cols.append(("max margin", "max_margin"))
    if any("tendency" in c for c in report["classes"]) or "freeeagle" in report["evidence"]:
        cols.append(("FreeEagle tendency", "tendency"))
    cols.append(("flagged", "flagged"))
    return cols


def _scan_rows(report: dict[str, Any]) -> list[list[str]]:
    """The per-class table's cells, with MM-BD's max margin and FreeEagle's tendency merged in."""
    mm, fe = report["evidence"].get("mm-bd"), report["evidence"].get("freeeagle")
    fmt = {"mask_l1": ".2f", "max_margin": ".2f", "tendency": ".2e"}
    rows = []
    for i, c in enumerate(report["classes"]):
        row = dict(c)
        if mm is not None and "max_margin" not in row:
            row["max_margin"] = mm["classes"][i]["max_margin"]
        if fe is not None and "tendency" not in row:
            row["tendency"] = fe["classes"][i]["tendency"]
        rows.append([_cell(row.get(key), fmt.get(key, ".3f"))
                     for _, key in _scan_columns(report)])
    return rows


def scan_summary(report: dict[str, Any]) -> list[str]:
    """One line per method's evidence, then the combined verdict."""
    lines = []
    for name, ev in report["evidence"].items():
        lines.append(f"{scan_evidence(name, ev)}; {ev['time_s']:.1f} s")
    targets = ", ".join(map(str, report["suspected_targets"])) or "none"
    how = scan_combination(report)
    lines.append(f"verdict: {report['verdict'].upper()}; suspected target(s): {targets}; "
                 + (f"{how}; " if how else "") + f"{report['time_s']:.1f} s")
    return lines


def scan_parts(report: dict[str, Any]) -> list[RenderableType]:
    """The per-class table (flagged classes in bold red), then each method's evidence and the verdict."""
    table = Table(title=f"advaudit scan-backdoor: {report['verdict']}")
    for h, _ in _scan_columns(report):
        table.add_column(h, justify="right")
    for r, c in zip(_scan_rows(report), report["classes"], strict=True):
        table.add_row(*(Text(v, style="bold red" if c["flagged"] else "") for v in r))
    return [table, *(Text(line) for line in scan_summary(report))]


# --- detect, detect evaluate --------------------------------------------------------------------------------

def detect_parts(report: dict[str, Any]) -> list[RenderableType]:
    """The verdict of each input (LCR: with LCR, mutations and error bound; at most 200 rows), then the cost."""
    t = report["totals"]
    lcr = "method" not in report
    columns = ("index", "verdict", "label", "LCR", "mutations", "error bound") if lcr else (
        "index", "verdict", "label", "score")
    table = Table(title=f"advaudit detect: {t['adversarial']} adversarial, {t['normal']} normal, "
                        f"{t['undecided']} undecided")
    for c in columns:
        table.add_column(c)
    for r in report["inputs"][:200]:
        cells = (r["index"], r["verdict"], r["label"], f"{r['lcr']:.3f}", r["mutations"], r["error_bound"]) if lcr \
            else (r["index"], r["verdict"], r["label"], f"{r['score']:.4f}")
        table.add_row(*(Text(str(v)) for v in cells))
    cost = f"{t['ms_per_input']:.2f} ms per input"
    return [table, Text(f"mean mutations {t['mean_mutations']:.1f}, {cost}" if lcr else cost)]


def _score_table(title: str, column: str, normal: dict[str, Any], adversarial: dict[str, Any],
                 f: dict[str, Any]) -> Table:
    """One row per set (normal, then each attack) with its mean +- 99% CI and AUROC, then the mean AUROC."""
    table = Table(title=title)
    for c in ("set", "n", column, "AUROC"):
        table.add_column(c)
    table.add_row("normal", str(normal["n"]), f"{normal['mean']:.4f} +- {normal['ci99']:.4f}", "-")
    for g, v in adversarial.items():
        table.add_row(Text(g), str(v["n"]), f"{v['mean']:.4f} +- {v['ci99']:.4f}", f"{f['auroc'][g]:.4f}")
    table.add_row("mean", "", "", f"{f['auroc_mean']:.4f}")
    return table


def detect_evaluate_parts(f: dict[str, Any]) -> list[RenderableType]:
    """kappa (LCR) or the detector's score per set with its 99% CI and AUROC per attack, then the
    decisions' figures (LCR: the SPRT's)."""
    if "table3" in f:
        radius = f["mutation"]["radius"]
        radii = radius if isinstance(radius, list) else [radius]
        t3 = f["table3"]
        title = f"kappa (LCR) and AUROC, {f['mutation']['operator']} radius {','.join(f'{r:g}' for r in radii)}"
        s = f["sprt"]
        return [_score_table(title, "kappa mean +- 99% CI", t3["kappa_nor"], t3["kappa_adv"], f), Text(
            f"SPRT: precision {s['precision']:.4f}, recall {s['recall']:.4f}, accuracy {s['accuracy']:.4f}, "
            f"false positives {s['false_positive_rate']:.4f}, undecided {s['undecided']}, "
            f"mean mutations {s['mean_mutations']:.1f} (adversarial {s['mean_mutations_adversarial'] or 0:.1f}), "
            f"{s['ms_per_input']:.2f} ms per input")]
    sc, d = f["score"], f["decisions"]
    return [_score_table(f"{f['method']} score and AUROC", "score mean +- 99% CI", sc["normal"], sc["adversarial"], f),
            Text(f"{f['method']}: precision {d['precision']:.4f}, recall {d['recall']:.4f}, "
                 f"accuracy {d['accuracy']:.4f}, false positives {d['false_positive_rate']:.4f}, "
                 f"undecided {d['undecided']}, {d['ms_per_input']:.2f} ms per input")]


# --- harden, audit ------------------------------------------------------------------------------------------

def harden_parts(report: dict[str, Any]) -> list[RenderableType]:
    """Before / after / change per figure of the harden run."""
    t = _table(f"harden ({report['method']}, linf eps {report['eps']:g}, {report['after']['n']} eval samples)",
               ("metric", "before", "after", "change"), left=("metric",))
    for r in report["summary"]:
        label = r["metric"].replace("_", " ") + (f" ({r['suite']})" if r["suite"] else "")
        t.add_row(label, f"{100 * r['before']:.1f}%", f"{100 * r['after']:.1f}%", f"{100 * r['change']:+.1f} pts")
    return [t]


def repair_parts(report: dict[str, Any]) -> list[RenderableType]:
    """The scan's finding, then clean accuracy and each reversed trigger's attack success, before and after."""
    scan = report["scan"]
    targets = ", ".join(map(str, scan["suspected_targets"])) or "none"
    lines: list[RenderableType] = [f"neural-cleanse: {scan['verdict']}; suspected target(s): {targets}"]
    after = report["after"]
    if after is None:
        lines.append("nothing to repair: no model written")
        return lines
    t = _table(f"repair ({report['config']['method']}, {len(report['rounds'])} round(s))",
               ("metric", "before", "after", "change"), left=("metric",))
    for row in repair_rows(report):
        t.add_row(*row)
    return [*lines, t, f"wrote {report['repaired']['path']} ({report['repaired']['format']})"]


def _gate_value(v: Any) -> str:
    """A gate table cell: '-' for none, floats to 4 places."""
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def audit_parts(report: dict[str, Any]) -> list[RenderableType]:
    """The audit's gates as a table (value, baseline value, pass / FAIL with the reason), then the verdict."""
    table = _table(f"advaudit audit: {report['verdict'].upper()} ({report['model']['path']})",
                   ("gate", "value", "baseline", "result"), left=("gate",))
    for g in report["gates"]:
        style = "green" if g["passed"] else "bold red"
        table.add_row(Text(g["gate"]), Text(_gate_value(g["value"])), Text(_gate_value(g["baseline"])),
                      Text("pass" if g["passed"] else f"FAIL: {g['reason']}", style=style))
    passed = sum(bool(g["passed"]) for g in report["gates"])
    verdict = "[green]PASS[/green]" if report["verdict"] == "pass" else "[red]FAIL[/red]"
    return [table, f"audit {verdict}: {passed}/{len(report['gates'])} gates passed"]


def table_parts(report: dict[str, Any]) -> list[RenderableType]:
    """What a console prints for ``report``, whatever its kind."""
    kind = report.get("kind")
    if kind == "attack" and "defense" in report:
        return defense_parts(report)
    by_kind: dict[str, Callable[[dict[str, Any]], list[RenderableType]]] = {
        "attack": attack_parts, "scan-backdoor": scan_parts, "detect": detect_parts,
        "detect-evaluate": detect_evaluate_parts, "harden": harden_parts, "audit": audit_parts,
        "repair": repair_parts,
    }
    if kind not in by_kind:
        raise ValueError(f"no table rendering for a report of kind {kind!r}")
    return by_kind[kind](report)


def render_table(report: dict[str, Any], width: int = 100) -> str:
    """``report`` as plain text tables (the ``table`` format): what the CLI prints, without colour."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, highlight=False)
    for part in table_parts(report):
        console.print(part)
    return buf.getvalue()
