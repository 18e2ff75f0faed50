"""Markdown for pull-request comments: verdict, gates, key figures per step, warnings; no images.

GitHub limits a comment to 65,536 characters; long tables are cut with a note and the whole text is
kept under :data:`MAX_CHARS`.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from . import fmt
from .normalize import as_audit

MAX_CHARS = 60_000
MAX_ROWS = 25
MAX_WARNINGS = 30


def cell(v: Any) -> str:
    """Text safe inside a Markdown table cell (no HTML, no column breaks)."""
    s = " ".join(str("" if v is None else v).split())
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("`", "'")


def code(v: Any) -> str:
    """An inline code span (backticks and pipes neutralised)."""
    s = " ".join(str("" if v is None else v).split()).replace("`", "'").replace("|", "\\|")
    return f"`{s}`" if s else "-"


def table(cols: Sequence[str], rows: Iterable[Sequence[Any]], limit: int = MAX_ROWS, what: str = "rows") -> list[str]:
    rows = list(rows)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows[:limit]]
    if len(rows) > limit:
        out.append(f"\n_{len(rows) - limit} more {what} not shown; see the JSON or HTML report._")
    return out


def _attack(step: dict[str, Any], r: dict[str, Any]) -> list[str]:
    eps = r.get("eps") or []
    m = step.get("metrics") or {}
    curve = " · ".join(f"{k}: {fmt.pct(v)}" for k, v in (r.get("robust_accuracy_by_eps") or {}).items())
    lines = [
        f"- clean accuracy **{fmt.pct(r.get('clean_accuracy'))}**, robust accuracy "
        f"**{fmt.pct(r.get('robust_accuracy'))}** "
        f"(worst case, {cell(r.get('norm'))} eps {fmt.value(max(eps)) if eps else '-'}, "
        f"n={cell((r.get('data') or {}).get('n'))})"
        + (f", success rate {fmt.pct(m['success_rate'])}" if "success_rate" in m else ""),
        f"- robust accuracy by eps: {curve}" if curve else "",
    ]
    rows = [[cell(x.get("attack")), fmt.value(x.get("eps")), fmt.pct(x.get("robust_accuracy")),
             fmt.pct(x.get("success_rate")),
             f"{x.get('verified')}/{x.get('attacked')}"] for x in r.get("results") or []]
    if rows:
        lines += ["", *table(("attack", "eps", "robust acc", "success", "verified"), rows)]
    return lines


def _defense(step: dict[str, Any], r: dict[str, Any]) -> list[str]:
    d = r["defense"]
    lines = [
        f"- defence {code(d.get('spec'))}: clean accuracy {fmt.pct(d.get('clean_accuracy_undefended'))} undefended, "
        f"**{fmt.pct(d.get('clean_accuracy'))}** defended (n={cell(d.get('n'))})",
        f"- honest robust accuracy (lowest over {cell(', '.join(d.get('modes') or {}))}; {cell(d.get('norm'))} eps "
        f"{fmt.value(max(d.get('eps') or [0]))}): **{fmt.pct(d.get('robust_accuracy'))}**",
    ]
    try:
        cols, rows = fmt.defense_rows(d)
    except (KeyError, TypeError, ValueError):
        cols, rows = [], []
    if cols:
        lines += ["", *table(cols, [[cell(c) for c in row] for row in rows])]
    return lines


def _scan(step: dict[str, Any], r: dict[str, Any]) -> list[str]:
    targets = ", ".join(map(str, r.get("suspected_targets") or [])) or "none"
    verdict = str(r.get("verdict", "-"))
    lines = [f"- verdict **{cell(verdict.upper())}**; suspected target class(es): {cell(targets)}; "
             f"methods {cell(', '.join(r.get('methods') or []))}"]
    lines += [f"- {cell(fmt.scan_evidence(name, ev))}" for name, ev in (r.get("evidence") or {}).items()]
    lines += [f"- {cell(how)}" for how in [fmt.scan_combination(r)] if how]
    flagged = [c for c in r.get("classes") or [] if c.get("flagged")]
    if flagged:
        rows = [[cell(c.get("label")), fmt.value(c.get("mask_l1")), fmt.value(c.get("anomaly_index"), 3),
                 fmt.pct(c.get("asr"))]
                for c in flagged]
        lines += ["", "Flagged classes:", "",
                  *table(("label", "mask L1", "anomaly index", "ASR"), rows, what="classes")]
    return lines


def _detect_eval(step: dict[str, Any], r: dict[str, Any]) -> list[str]:
    s = r.get("sprt") or r.get("decisions") or {}
    per = ", ".join(f"{cell(g)} {fmt.value(v)}" for g, v in (r.get("auroc") or {}).items())
    return [
        f"- AUROC **{fmt.value(r.get('auroc_all'))}** (all adversarial inputs), mean over attacks "
        f"{fmt.value(r.get('auroc_mean'))}"
        + (f"; per attack: {per}" if per else ""),
        f"- {cell(r['method']) if 'method' in r else 'SPRT'}: precision {fmt.pct(s.get('precision'))}, "
        f"recall {fmt.pct(s.get('recall'))}, false positive rate "
        f"{fmt.pct(s.get('false_positive_rate'))}, {fmt.value(s.get('ms_per_input'), 3)} ms per input",
    ]


def _detect_run(step: dict[str, Any], r: dict[str, Any]) -> list[str]:
    t = r.get("totals") or {}
    method = f" ({cell(r['method'])})" if "method" in r else ""
    lines = [f"- {cell(t.get('n'))} inputs{method}: **{cell(t.get('adversarial'))} adversarial**, "
             f"{cell(t.get('normal'))} normal, "
             f"{cell(t.get('undecided'))} undecided; {fmt.value(t.get('ms_per_input'), 3)} ms per input"]
    inputs = r.get("inputs") or []
    if inputs:  # each input's verdict (LCR: with its LCR, mutations and error bound)
        if "method" in r:
            cols: tuple[str, ...] = ("index", "verdict", "label", "score")
            rows = [[cell(x.get("index")), cell(x.get("verdict")), cell(x.get("label")), fmt.value(x.get("score"), 4)]
                    for x in inputs]
        else:
            cols = ("index", "verdict", "label", "LCR", "mutations", "error bound")
            rows = [[cell(x.get("index")), cell(x.get("verdict")), cell(x.get("label")), fmt.value(x.get("lcr"), 3),
                     cell(x.get("mutations")), fmt.value(x.get("error_bound"), 3)] for x in inputs]
        lines += ["", *table(cols, rows, what="inputs")]
    return lines


def _harden(step: dict[str, Any], r: dict[str, Any]) -> list[str]:
    rows = []
    for x in r.get("summary") or []:
        label = str(x.get("metric", "")).replace("_", " ") + (f" ({x['suite']})" if x.get("suite") else "")
        ch = x.get("change")
        rows.append([cell(label), fmt.pct(x.get("before")), fmt.pct(x.get("after")),
                     "-" if not isinstance(ch, (int, float)) else f"{100 * ch:+.1f} pts"])
    h = r.get("hardened") or {}
    return [f"- {cell(r.get('method'))} adversarial training, Linf eps {fmt.value(r.get('eps'))}; hardened model "
            f"{code(h.get('path'))}",
            "", *table(("metric", "before", "after", "change"), rows)]


def _repair(step: dict[str, Any], r: dict[str, Any]) -> list[str]:
    scan = r.get("scan") or {}
    targets = ", ".join(map(str, scan.get("suspected_targets") or [])) or "none"
    lines = [f"- scan verdict **{cell(str(scan.get('verdict', '-')).upper())}**; suspected target class(es): "
             f"{cell(targets)}",
             f"- {cell(fmt.scan_evidence('neural-cleanse', scan))}"]
    if r.get("after") is None:
        return lines + [f"- nothing to repair: no model written (clean accuracy "
                        f"{fmt.pct((r.get('before') or {}).get('clean_accuracy'))} on the evaluation data)"]
    fixed = r.get("repaired") or {}
    return lines + [f"- {cell(fmt.repair_rounds(r))}",
                    f"- repaired model {code(fixed.get('path'))} ({cell(fixed.get('format'))})",
                    "", *table(("metric", "before", "after", "change"),
                               [[cell(c) for c in row] for row in fmt.repair_rows(r)])]


def _step(step: dict[str, Any]) -> list[str]:
    status = step.get("status")
    head = f"### {cell(step.get('name'))} ({cell(step.get('kind'))}){'' if status == 'done' else ' — FAILED'}"
    if status != "done" or not isinstance(step.get("report"), dict):
        return [head, "", f"Step failed: {cell(step.get('error') or 'no report')}"]
    r = step["report"]
    kind = r.get("kind")
    try:
        if kind == "attack":
            body = _defense(step, r) if "defense" in r else _attack(step, r)
        elif kind == "scan-backdoor":
            body = _scan(step, r)
        elif kind == "detect-evaluate":
            body = _detect_eval(step, r)
        elif kind == "detect":
            body = _detect_run(step, r)
        elif kind == "harden":
            body = _harden(step, r)
        elif kind == "repair":
            body = _repair(step, r)
        else:
            body = []
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        body = [f"_This step's report could not be summarised ({cell(type(exc).__name__)})._"]
    return [head, "", *[b for b in body if b is not None]]


def render_markdown(report: dict[str, Any]) -> str:
    """The report as GitHub-flavoured Markdown (under :data:`MAX_CHARS` characters)."""
    a = as_audit(report)
    ok = a.get("verdict") == "pass"
    passed, total = fmt.gate_counts(a)
    steps = a.get("steps") or []
    failed_steps = [s for s in steps if s.get("status") != "done"]
    source = a.get("source_kind", "audit")
    model = a.get("model") or {}
    summary = f"{passed}/{total} gates passed" + (f", {len(failed_steps)} step(s) failed" if failed_steps else "")
    lines = [
        f"## {'✅' if ok else '❌'} advaudit {cell(source)}: **{'PASS' if ok else 'FAIL'}** ({summary})",
        "",
        f"Model {code(model.get('path'))}, sha256 {code(str(model.get('sha256', ''))[:16])}…; seed "
        f"{cell(a.get('seed'))}; "
        f"advaudit {cell((a.get('meta') or {}).get('advaudit'))}",
        "",
    ]
    gates = a.get("gates") or []
    if gates:
        rows = []
        for g in sorted(gates, key=lambda g: bool(g.get("passed"))):  # failures first
            baseline = fmt.value(g.get("baseline")) + (" (regressed)" if g.get("regressed") else "")
            rows.append([cell(g.get("gate")), cell(fmt.value(g.get("value"))), cell(fmt.value(g.get("threshold"))),
                         cell(baseline),
                         "pass" if g.get("passed") else "**FAIL**", cell(fmt.one_line(g.get("reason", ""), 200))])
        lines += table(("gate", "value", "threshold", "baseline", "result", "reason"), rows, limit=60, what="gates")
    else:
        lines.append("_No gates were set._")
    lines.append("")
    if len(steps) > 1:
        rows = []
        for s in steps:
            name, v = fmt.headline(s)
            rows.append([cell(s.get("name")), cell(s.get("kind")), cell(s.get("status")),
                         cell(f"{name} {fmt.metric(name, v)}" if name else "-"), fmt.seconds(s.get("time_s"))])
        lines += table(("step", "kind", "status", "headline", "time"), rows, limit=40, what="steps") + [""]
    for s in steps:
        lines += _step(s) + [""]
    ws = a.get("warnings") or []
    if ws:
        lines += [f"### Warnings ({len(ws)})", ""] + [f"- {cell(fmt.one_line(w, 300))}" for w in ws[:MAX_WARNINGS]]
        if len(ws) > MAX_WARNINGS:
            lines.append(f"- _{len(ws) - MAX_WARNINGS} more warnings not shown._")
        lines.append("")
    env = a.get("environment") or {}
    meta = a.get("meta") or {}
    fp = [
        ("model", code(model.get("path"))), ("sha256", code(model.get("sha256"))),
        ("format", cell(model.get("format"))),
        ("command", code(fmt.one_line(a.get("command", ""), 300))), ("seed", cell(a.get("seed"))),
        ("created", cell(meta.get("created"))), ("device", cell(env.get("device") or "-")),
        ("versions", cell(", ".join(f"{k} {env.get(k) or meta.get(k)}" for k in ("advaudit", "python", "torch",
                                                                                 "onnxruntime", "numpy")
                                    if env.get(k) or meta.get(k)))),
    ]
    if a.get("config_sha256"):
        fp.append(("config sha256", code(a["config_sha256"])))
    lines += ["<details><summary>Model and environment</summary>", "", *table(("", ""), fp, limit=50), "", "</details>",
              ""]
    text = "\n".join(lines)
    if len(text) > MAX_CHARS:
        cut = text.rfind("\n", 0, MAX_CHARS - 200)
        text = text[:cut] + "\n\n_Report cut to stay under GitHub's comment limit; see the JSON or HTML report._\n"
    return text
