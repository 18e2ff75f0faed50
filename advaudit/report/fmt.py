"""Number and text formatting shared by the HTML, Markdown and JUnit renderers."""

from __future__ import annotations

import math
from typing import Any

HEADLINE = {"attack": "robust_accuracy", "defense": "robust_accuracy", "scan-backdoor": "verdict", "detect": "auroc",
            "harden": "robust_accuracy", "repair": "asr_after"}
"""Each audit step kind's headline metric: what a gate naming only the step reads, and what reports show first."""
PERCENT_METRICS = ("accuracy", "success_rate", "precision", "recall", "false_positive_rate", "asr")


def value(v: Any, digits: int = 4) -> str:
    """A metric value for display: numbers to ``digits`` significant digits, ``-`` for missing."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}g}"
    return str(v)


def pct(v: Any, digits: int = 1) -> str:
    if v is None or not isinstance(v, (int, float)) or isinstance(v, bool):
        return value(v)
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return f"{100 * v:.{digits}f}%"


def metric(name: str, v: Any) -> str:
    """Percentages for accuracies and rates, plain values otherwise."""
    base = name.split("@")[0].split(".")[-1]
    if any(p in base for p in PERCENT_METRICS) and isinstance(v, (int, float)) and not isinstance(v, bool):
        return pct(v)
    return value(v)


def seconds(v: Any) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "-"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def headline(step: dict[str, Any]) -> tuple[str, Any]:
    """The step's headline metric (the one its bare name gates on) and its value."""
    name = HEADLINE.get(step.get("kind", ""), "")
    metrics = step.get("metrics") or {}
    if name in metrics:
        return name, metrics[name]
    if metrics:
        k = next(iter(metrics))
        return k, metrics[k]
    return "", None


def gate_counts(audit: dict[str, Any]) -> tuple[int, int]:
    gates = audit.get("gates") or []
    return sum(1 for g in gates if g.get("passed")), len(gates)


def one_line(text: Any, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def scan_evidence(name: str, ev: dict[str, Any]) -> str:
    """One backdoor scanner's evidence in one line: its verdict and the figures it decided on."""
    if name == "neural-cleanse" and ev.get("rule") == "gap":
        return (f"neural-cleanse: {ev.get('verdict')}; p-value {value(ev.get('p_value'), 3)} (alpha "
                f"{value(ev.get('alpha'))}), smallest mask {value(ev.get('largest_norm_ratio'), 3)}x below the "
                f"median L1 {value(ev.get('median_l1'))} (needs {value(ev.get('min_ratio'))}x); paper's max anomaly "
                f"index {value(ev.get('max_anomaly_index'))}")
    if name == "neural-cleanse" and ev.get("rule") == "reference":
        refs = ev.get("reference") or {}
        return (f"neural-cleanse: {ev.get('verdict')}; p-value {value(ev.get('p_value'), 3)} (alpha "
                f"{value(ev.get('alpha'))}) for class {ev.get('top_class')} against {refs.get('models')} clean "
                f"reference models; smallest mask {value(ev.get('largest_norm_ratio'), 3)}x below the median L1 "
                f"{value(ev.get('median_l1'))}")
    if name == "neural-cleanse":
        return (f"neural-cleanse: {ev.get('verdict')}; median mask L1 {value(ev.get('median_l1'))}, max anomaly "
                f"index {value(ev.get('max_anomaly_index'))} (threshold {value(ev.get('anomaly_threshold'))})")
    if name == "mm-bd":
        return (f"mm-bd: {ev.get('verdict')}; largest max-margin {value(ev.get('top_margin'))} (class "
                f"{ev.get('top_class')}), p-value {value(ev.get('p_value'), 3)} (alpha {value(ev.get('alpha'))})")
    if name == "freeeagle":
        return (f"freeeagle: {ev.get('verdict')}; anomaly metric {value(ev.get('anomaly_metric'))} (class "
                f"{ev.get('top_class')}), p-value {value(ev.get('p_value'), 3)} (alpha {value(ev.get('alpha'))})")
    return f"{name}: {ev.get('verdict')}"


def scan_combination(report: dict[str, Any]) -> str:
    """How a scan's verdict was combined, in a few words (empty for reports that predate it)."""
    c = report.get("combined") or {}
    if not c:
        return ""
    if c.get("rule") == "any":
        return "flagged when any scanner flags"
    if c.get("rule") == "fisher":
        pools = [f"class {q['class']}: {'+'.join(q['methods'])} p {value(q['p_value'], 3)}"
                 for q in c.get("pools", []) if q["class"] is not None and len(q["methods"]) > 1]
        agree = f"; agreeing: {', '.join(pools)}" if pools else ""
        n = len(c.get("pools", []))
        return (f"combined p-value {value(c.get('p_value'), 3)} (Fisher over scanners that agree on a class, "
                f"Bonferroni over {n} pool{'' if n == 1 else 's'}, alpha {value(c.get('alpha'))}{agree})")
    return f"combined p-value {value(c.get('p_value'), 3)} (Bonferroni, alpha {value(c.get('alpha'))})"


def defense_rows(d: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the blind / BPDA / BPDA+EOT table of a ``defense`` section.

    One table for every renderer (terminal, Markdown, HTML): rendering a report needs only the report.
    """
    modes = list(d["modes"])
    cols = ["attack", "eps", "undefended", "clean (defended)", *modes]
    keyed: dict[tuple[str, float], dict[str, Any]] = {}
    for m in modes:
        for r in d["modes"][m]["results"]:
            keyed.setdefault((r["attack"], r["eps"]), {})[m] = r["robust_accuracy"]
            if m == "blind":
                keyed[(r["attack"], r["eps"])]["undefended"] = r.get("robust_accuracy_undefended")
    rows = [[str(attack), f"{e:g}" if isinstance(e, (int, float)) else str(e), pct(vals.get("undefended")),
             pct(d["clean_accuracy"]), *(pct(vals.get(m)) for m in modes)]
            for (attack, e), vals in keyed.items()]
    und = d.get("robust_accuracy_undefended_by_eps")
    for e in d["eps"]:
        key = f"{e:g}"
        rows.append(["worst case", key, pct(und.get(key)) if und else "-", pct(d["clean_accuracy"]),
                     *(pct(d["modes"][m]["robust_accuracy_by_eps"].get(key)) for m in modes)])
    return cols, rows


def change(before: Any, after: Any) -> str:
    """``after - before`` of two fractions in percentage points, ``-`` when either is missing."""
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after))
    return f"{100 * (after - before):+.1f} pts" if ok else "-"


def repair_rows(report: dict[str, Any]) -> list[list[str]]:
    """The before / after / change rows of a ``repair`` report: clean accuracy, then each reversed
    trigger's attack success (by target label) on the evaluation data."""
    before, after = report["before"], report.get("after") or {}
    rows = [("clean accuracy", before.get("clean_accuracy"), after.get("clean_accuracy"))]
    rows += [(f"attack success, trigger of {label}", b, (after.get("asr") or {}).get(label))
             for label, b in (before.get("asr") or {}).items()]
    return [[name, pct(b), pct(a), change(b, a)] for name, b, a in rows]


def repair_rounds(report: dict[str, Any]) -> str:
    """How the unlearning went: rounds run (of at most), and the last round's reversed-trigger L1 norms
    against the scan's median label L1 (a repaired trigger is no longer smaller than the others)."""
    rounds, config = report.get("rounds") or [], report.get("config") or {}
    text = f"{len(rounds)} unlearning round(s) (at most {value(config.get('rounds'))}, {config.get('method', '-')})"
    last = (rounds[-1].get("reversed_l1") or {}) if rounds else {}
    if last:
        norms = ", ".join(f"label {k}: {value(v)}" for k, v in last.items())
        median = value((report.get("scan") or {}).get("median_l1"))
        text += f"; reversed trigger L1 after the last: {norms} (median label L1 {median})"
    return text
