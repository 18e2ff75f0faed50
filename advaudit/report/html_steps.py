"""The HTML of each step of a report (attack, defence, backdoor scan, detection, hardening) and the
small pieces every section uses: escaped cells, tables, figures, pills, embedded images and charts.

:mod:`advaudit.report.html` puts them in the page template.  Every string taken from the report is
HTML-escaped here (model paths and class names are untrusted input).
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import fmt
from .svg import PALETTE, Series, line_chart

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_TABLE_ROWS = 500
_IMAGE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
                (b"GIF89a", "image/gif"))


def e(v: Any) -> str:
    """HTML-escape anything (quotes too: safe in attributes)."""
    return escape("" if v is None else str(v), quote=True)


# ---------------------------------------------------------------------------------------------- parts


def _val(v: Any, digits: int = 4) -> str:
    return e(fmt.value(v, digits))


def _pct(v: Any) -> str:
    return e(fmt.pct(v))


def html_table(cols: Sequence[str], rows: Iterable[Sequence[Any]], row_classes: Sequence[str] | None = None,
           left: Sequence[int] = (0,), limit: int = MAX_TABLE_ROWS, what: str = "rows") -> str:
    rows = list(rows)
    head = "".join(f'<th class="l">{e(c)}</th>' if i in left else f"<th>{e(c)}</th>" for i, c in enumerate(cols))
    body = []
    for r_i, row in enumerate(rows[:limit]):
        cls = f' class="{row_classes[r_i]}"' if row_classes and row_classes[r_i] else ""
        cells = "".join(f'<td class="l">{c}</td>' if i in left else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    note = ""
    if len(rows) > limit:
        note = f'<p class="note">First {limit} of {len(rows)} {e(what)} shown; the JSON report holds them all.</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


def _figures(items: Iterable[tuple[str, str]]) -> str:
    cells = "".join(f'<div class="fig"><div class="k">{e(k)}</div><div class="v">{e(v)}</div></div>' for k, v in items)
    return f'<div class="figures">{cells}</div>'


def pill(text: str, cls: str) -> str:
    return f'<span class="pill {e(cls)}">{e(text)}</span>'


def kv_list(items: Iterable[tuple[str, Any]], code: Sequence[str] = ()) -> str:
    out = []
    for k, v in items:
        shown = "-" if v is None or v == "" else (f"<code>{e(v)}</code>" if k in code else e(v))
        out.append(f"<dt>{e(k)}</dt><dd>{shown}</dd>")
    return f'<dl class="kv">{"".join(out)}</dl>'


def _resolve(base_dir: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else base_dir / p


def embed_image(base_dir: Path, rel: str | None, name: str, caption: str = "", tall: bool = False) -> str:
    """``<figure>`` with the artifact as a data URI, or a visible note when it cannot be embedded."""
    if not rel:
        return f'<div class="missing">No {e(name)} image in this report.</div>'
    try:
        path = _resolve(base_dir, rel)
        if not path.is_file():  # a device (/dev/zero) or FIFO named in a report would never end or never start
            raise FileNotFoundError(rel)
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            return (f'<div class="missing">Artifact {e(name)} (<code>{e(rel)}</code>) is {size / 1e6:.1f} MB: '
                    "too large to embed.</div>")
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)  # bounded, should the file grow meanwhile
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return (f'<div class="missing">Artifact {e(name)} not found: <code>{e(rel)}</code> '
                "(relative to the report's folder).</div>")
    mime = next((m for magic, m in _IMAGE_TYPES if data.startswith(magic)), None)
    if mime is None:
        return f'<div class="missing">Artifact {e(name)} (<code>{e(rel)}</code>) is not a PNG, JPEG or GIF image.</div>'
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    cls = ' class="tall"' if tall else ""
    cap = f"<figcaption>{e(caption)}</figcaption>" if caption else ""
    return f'<figure><img{cls} src="{uri}" alt="{e(name)}">{cap}</figure>'


def _eps_points(clean: float | None, by_eps: dict[str, Any]) -> list[tuple[float, float]]:
    pts = [(float(k), float(v)) for k, v in by_eps.items() if isinstance(v, (int, float))]
    pts.sort()
    if isinstance(clean, (int, float)):
        pts = [(0.0, float(clean))] + [p for p in pts if p[0] > 0]
    return pts


# ---------------------------------------------------------------------------------------------- steps


def _attack_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> str:
    m = step.get("metrics") or {}
    eps = r.get("eps") or []
    n = (r.get("data") or {}).get("n")
    parts = [_figures([
        ("clean accuracy", fmt.pct(r.get("clean_accuracy"))),
        (f"robust accuracy (eps {fmt.value(max(eps)) if eps else '-'})", fmt.pct(r.get("robust_accuracy"))),
        ("success rate", fmt.pct(m.get("success_rate"))),
        ("samples", fmt.value(n)),
        ("norm", str(r.get("norm", "-"))),
    ])]
    chart = line_chart(
        [Series("worst case over attacks", _eps_points(r.get("clean_accuracy"), r.get("robust_accuracy_by_eps") or {}),
                PALETTE[0])]
        + _per_attack_series(r),
        x_label=f"eps ({r.get('norm', '')})", y_label="accuracy", title="Accuracy vs eps (eps 0: clean accuracy)",
    )
    art = step.get("artifacts") or {}
    grid = embed_image(base_dir, art.get("examples"), "examples",
                       "Adversarial examples: clean | perturbation (magnified) | adversarial, predicted label and "
                       "confidence.",
                       tall=True) if "examples" in art else ""
    parts.append(f'<div class="row"><div>{chart}</div><div>{grid}</div></div>')
    cols = ("attack", "eps", "robust acc", "success", "verified", "Linf mean/med", "L2 mean/med", "queries", "time")
    rows = [[
        e(x.get("attack")), (_val(x.get("eps"))), _pct(x.get("robust_accuracy")), _pct(x.get("success_rate")),
        f"{e(x.get('verified'))}/{e(x.get('attacked'))}",
        f"{_val(x.get('mean_linf'), 3)}/{_val(x.get('median_linf'), 3)}",
        f"{_val(x.get('mean_l2'), 3)}/{_val(x.get('median_l2'), 3)}",
        _val(x.get("mean_queries"), 4), fmt.seconds(x.get("time_s")),
    ] for x in r.get("results") or []]
    parts.append("<h3>Results per attack and eps</h3>" + html_table(cols, rows))
    return "".join(parts)


def _per_attack_series(r: dict[str, Any]) -> list[Series]:
    """One dashed curve per attack when several ran (the worst case is their per-sample minimum)."""
    by: dict[str, list[tuple[float, float]]] = {}
    for x in r.get("results") or []:
        if isinstance(x.get("eps"), (int, float)) and isinstance(x.get("robust_accuracy"), (int, float)):
            by.setdefault(str(x.get("attack")), []).append((float(x["eps"]), float(x["robust_accuracy"])))
    if len(by) < 2 or len(by) > 6:
        return []
    clean = r.get("clean_accuracy")
    out = []
    for i, (name, pts) in enumerate(by.items()):
        pts = sorted(pts)
        if isinstance(clean, (int, float)):
            pts = [(0.0, float(clean))] + [p for p in pts if p[0] > 0]
        out.append(Series(name, pts, PALETTE[(i + 1) % len(PALETTE)], dashed=True))
    return out


def _defense_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> str:
    d = r["defense"]
    draws = f"; expected over {d.get('eval_draws')} seeded draws" if d.get("randomized") else ""
    parts = [
        f'<p>Defence stack <code>{e(d.get("spec"))}</code> in front of the model{e(draws)}. '
        "The honest robust accuracy is the lowest over the adaptive modes run.</p>",
        _figures([
            ("clean accuracy, undefended", fmt.pct(d.get("clean_accuracy_undefended"))),
            ("clean accuracy, defended", fmt.pct(d.get("clean_accuracy"))),
            (f"honest robust accuracy (eps {fmt.value(max(d.get('eps') or [0]))})", fmt.pct(d.get("robust_accuracy"))),
            ("samples", fmt.value(d.get("n"))),
        ]),
    ]
    series = []
    und = d.get("robust_accuracy_undefended_by_eps")
    if und:
        points = _eps_points(d.get("clean_accuracy_undefended"), und)
        series.append(Series("undefended", points, "#6b7280", dashed=True))
    for i, (mode, md) in enumerate((d.get("modes") or {}).items()):
        series.append(Series(mode, _eps_points(d.get("clean_accuracy"), md.get("robust_accuracy_by_eps") or {}),
                             PALETTE[i % len(PALETTE)]))
    parts.append(line_chart(series, x_label=f"eps ({d.get('norm', '')})", y_label="accuracy",
                            title="Accuracy vs eps per adaptive mode (eps 0: clean accuracy)"))
    try:
        cols, rows = fmt.defense_rows(d)
    except (KeyError, TypeError, ValueError):
        cols, rows = [], []
    if cols:
        parts.append("<h3>Blind, BPDA and BPDA+EOT side by side</h3>"
                     + html_table(cols, [[e(c) for c in row] for row in rows]))
    notes = [f"{mode}: {md['note']}" for mode, md in (d.get("modes") or {}).items() if md.get("note")]
    if notes:
        parts.append("".join(f'<p class="note">{e(n)}</p>' for n in notes))
    return "".join(parts)


def _scan_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> str:
    verdict = str(r.get("verdict", "-"))
    targets = ", ".join(map(str, r.get("suspected_targets") or [])) or "none"
    names = ((r.get("model") or {}).get("spec") or {}).get("class_names") or []
    parts = [f'<p>Verdict {pill(verdict.upper(), verdict)} &nbsp; suspected target class(es): <b>{e(targets)}</b> '
             f'&nbsp; methods: {e(", ".join(r.get("methods") or []))} &nbsp; {e(fmt.seconds(r.get("time_s")))}</p>']
    lines = [fmt.scan_evidence(name, ev) for name, ev in (r.get("evidence") or {}).items()]
    if lines:
        parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in lines) + "</ul>")
    mm = (r.get("evidence") or {}).get("mm-bd")
    classes = r.get("classes") or []
    show_margin = mm is not None or any("max_margin" in c for c in classes)
    cols = ["label", "class", "mask L1", "anomaly index", "ASR"] + (["max margin"] if show_margin else []) + ["flagged"]
    rows, classes_css = [], []
    for i, c in enumerate(classes):
        margin = c.get("max_margin")
        if margin is None and mm is not None and i < len(mm.get("classes") or []):
            margin = mm["classes"][i].get("max_margin")
        label = c.get("label")
        cname = names[label] if isinstance(label, int) and 0 <= label < len(names) else ""
        row = [e(label), e(cname), _val(c.get("mask_l1")), _val(c.get("anomaly_index"), 3), _pct(c.get("asr"))]
        if show_margin:
            row.append(_val(margin))
        row.append(pill("FLAGGED", "fail") if c.get("flagged") else "")
        rows.append(row)
        classes_css.append("flagged" if c.get("flagged") else "")
    art = step.get("artifacts") or {}
    if art.get("triggers_overview"):
        overview = embed_image(base_dir, art.get("triggers_overview"), "reconstructed triggers",
                               "Reconstructed triggers per class (mask, pattern, mask x pattern); flagged classes are "
                               "marked.")
    else:
        overview = ('<p class="note">No reconstructed-trigger images (run with --triggers-dir, or a method that '
                    "reconstructs none).</p>")
    parts.append("<h3>Reconstructed triggers</h3>" + overview)
    parts.append("<h3>Per class</h3>" + html_table(cols, rows, classes_css, left=(0, 1), what="classes"))
    return "".join(parts)


def _detect_eval_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> str:
    method = r.get("method")  # absent: LCR
    s = r.get("sprt") or r.get("decisions") or {}
    mut = r.get("mutation") or {}
    auroc_all = r.get("auroc_all")
    n_adv = e(sum((r.get("n_adversarial") or {}).values()))
    intro = (f"<p>Detector <code>{e(method)}</code>; {e(r.get('n_normal', '-'))} normal inputs, {n_adv} "
             "adversarial.</p>"
             if method else
             f"<p>Label Change Rate under <code>{e(mut.get('operator'))}</code> mutations (radius "
             f"{e(fmt.value(mut.get('radius')))}, "
             f"{e(r.get('lcr_mutations', '-'))} per input); {e(r.get('n_normal', '-'))} normal inputs, {n_adv} "
             "adversarial.</p>")
    what = "decision" if method else "SPRT"
    parts = [
        intro,
        _figures([
            ("AUROC (all)", fmt.value(auroc_all)),
            ("AUROC (mean over attacks)", fmt.value(r.get("auroc_mean"))),
            (f"{what} precision", fmt.pct(s.get("precision"))),
            (f"{what} recall", fmt.pct(s.get("recall"))),
            ("false positive rate", fmt.pct(s.get("false_positive_rate"))),
            ("ms per input", fmt.value(s.get("ms_per_input"), 3)),
        ]),
    ]
    roc = r.get("roc") or {}
    fpr, tpr = roc.get("fpr") or [], roc.get("tpr") or []
    if fpr and len(fpr) == len(tpr):
        chart = line_chart([Series(f"{method or 'LCR'} (AUROC {fmt.value(auroc_all)})", list(zip(fpr, tpr)), PALETTE[1],
                                   markers=False)],
                           x_label="false positive rate", y_label="true positive rate", x_max=1.0, percent_x=False,
                           percent_y=False, width=430, height=400, diagonal=True,
                           title=f"ROC curve, AUROC {fmt.value(auroc_all)}")
    elif (step.get("artifacts") or {}).get("roc"):
        chart = embed_image(base_dir, step["artifacts"]["roc"], "ROC curve")
    else:
        chart = ('<div class="missing">This report holds no ROC points '
                 "(reports from before advaudit 0.1 omit them).</div>")
    t3 = r.get("table3") or {}
    sets = r.get("score") or {}
    kn = (sets.get("normal") if method else t3.get("kappa_nor")) or {}
    rows = [["normal", e(kn.get("n")), f"{_val(kn.get('mean'))} &plusmn; {_val(kn.get('ci99'), 3)}", "-"]]
    for g, v in ((sets.get("adversarial") if method else t3.get("kappa_adv")) or {}).items():
        rows.append([e(g), e(v.get("n")), f"{_val(v.get('mean'))} &plusmn; {_val(v.get('ci99'), 3)}",
                     _val((r.get("auroc") or {}).get(g))])
    score = "score" if method else "LCR"
    table = "<h3>AUROC per attack</h3>" + html_table(("set", "n", f"{score} mean \u00b1 99% CI", "AUROC"), rows)
    sprt_rows = [[e(k.replace("_", " ")), e(fmt.value(s.get(k)))] for k in ("alpha", "beta", "mu", "sigma", "p0", "p1",
                                                                            "accuracy", "undecided",
                                                           "mean_mutations", "mean_mutations_adversarial",
                                                                            "mean_mutations_normal") if k in s]
    table += f"<h3>{'Decisions' if method else 'SPRT'}</h3>" + html_table(("figure", "value"), sprt_rows)
    parts.append(f'<div class="row"><div>{chart}</div><div style="flex:1 1 380px">{table}</div></div>')
    return "".join(parts)


def _detect_run_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> str:
    t = r.get("totals") or {}
    cal = r.get("calibration") or {}
    parts = [_figures([
        ("inputs", fmt.value(t.get("n"))), ("adversarial", fmt.value(t.get("adversarial"))),
        ("normal", fmt.value(t.get("normal"))), ("undecided", fmt.value(t.get("undecided"))),
        ("threshold", fmt.value(cal.get("threshold"))) if "method" in r else ("kappa_nor",
                                                                              fmt.value(cal.get("kappa_nor"))),
        ("ms per input", fmt.value(t.get("ms_per_input"), 3)),
    ])]
    inputs = r.get("inputs") or []
    css = ["flagged" if x.get("verdict") == "adversarial" else "" for x in inputs]
    if "method" in r:  # a detector other than LCR: one score per input
        rows = [[e(x.get("index")), e(x.get("verdict")), e(x.get("label")), _val(x.get("score"), 4)] for x in inputs]
        parts.append(html_table(("index", "verdict", "label", "score"), rows, css, left=(0, 1), what="inputs"))
        return "".join(parts)
    rows = [[e(x.get("index")), e(x.get("verdict")), e(x.get("label")), _val(x.get("lcr"), 3), e(x.get("mutations")),
             _val(x.get("error_bound"))] for x in inputs]
    parts.append(html_table(("index", "verdict", "label", "LCR", "mutations", "error bound"), rows, css, left=(0, 1),
                        what="inputs"))
    return "".join(parts)


def _harden_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> str:
    h = r.get("hardened") or {}
    parts = [f"<p>Adversarial training (<code>{e(r.get('method'))}</code>, Linf eps {e(fmt.value(r.get('eps')))}); "
             "hardened model "
             f"<code>{e(h.get('path'))}</code>, sha256 <code>{e(h.get('sha256'))}</code>.</p>"]
    rows = []
    for x in r.get("summary") or []:
        label = str(x.get("metric", "")).replace("_", " ") + (f" ({x['suite']})" if x.get("suite") else "")
        ch = x.get("change")
        rows.append([e(label), _pct(x.get("before")), _pct(x.get("after")),
                     "-" if not isinstance(ch, (int, float)) else f"{100 * ch:+.1f} pts"])
    parts.append(html_table(("metric", "before", "after", "change"), rows))
    return "".join(parts)


def _step_body(step: dict[str, Any], base_dir: Path) -> str:
    if step.get("status") != "done" or not isinstance(step.get("report"), dict):
        return f'<div class="error">Step failed: {e(step.get("error") or "no report")}</div>'
    r = step["report"]
    kind = r.get("kind")
    try:
        if kind == "attack":
            return _defense_step(step, r, base_dir) if "defense" in r else _attack_step(step, r, base_dir)
        if kind == "scan-backdoor":
            return _scan_step(step, r, base_dir)
        if kind == "detect-evaluate":
            return _detect_eval_step(step, r, base_dir)
        if kind == "detect":
            return _detect_run_step(step, r, base_dir)
        if kind == "harden":
            return _harden_step(step, r, base_dir)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a malformed section must not sink the page
        return f'<div class="missing">This step\'s report could not be drawn ({e(type(exc).__name__)}: {e(exc)}).</div>'
    return f'<p class="note">No renderer for step reports of kind {e(kind)}.</p>'


def step_section(i: int, step: dict[str, Any], base_dir: Path) -> str:
    status = str(step.get("status", "done"))
    kind = str(step.get("kind", ""))
    artifacts = step.get("artifacts") or {}
    art = ""
    if artifacts:
        listed = ", ".join(f"{e(k)} <code>{e(v)}</code>" for k, v in artifacts.items())
        art = f'<p class="note">Artifacts: {listed}</p>'
    metrics = step.get("metrics") or {}
    mrow = ""
    if metrics:
        mrow = "<details><summary class=\"note\">All metrics of this step</summary>" + html_table(
            ("metric", "value"), [[e(k), e(fmt.metric(k, v))] for k, v in metrics.items()]) + "</details>"
    return (
        f'<section class="card step" id="step-{i}"><h2>{e(step.get("name"))} <span class="sub">{e(kind)}</span> '
        f'{pill(status.upper(), status)} <span class="sub">{e(fmt.seconds(step.get("time_s")))}</span></h2>'
        f"{_step_body(step, base_dir)}{mrow}{art}</section>"
    )
