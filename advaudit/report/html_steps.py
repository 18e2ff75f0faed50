"""What each step section of the HTML page shows (attack, defence, backdoor scan, detection, hardening, repair), as
plain data for the Jinja2 partials under ``templates/steps/``: figures, table rows and cells, CSS classes,
numbers formatted with :mod:`.fmt`, embedded images.

No HTML is built here.  The templates escape every value they print (autoescaping on), so the strings taken
from the report (model paths and class names are untrusted input) are passed on as they are.  The only
markup passed on is the SVG charts of :mod:`.svg`, which escape their own text.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from markupsafe import Markup

from . import fmt
from .svg import PALETTE, Series, line_chart

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_TABLE_ROWS = 500
_IMAGE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
                (b"GIF89a", "image/gif"))


# ---------------------------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Cell:
    """A table cell that is more than text (any other cell value prints as escaped text, ``None`` as nothing):
    ``pill`` (text, CSS class), ``code`` (text), ``link`` (text, href) or ``pm`` (mean, its 99% interval)."""

    kind: str
    text: Any
    extra: Any = None


def pill(text: str, cls: str) -> Cell:
    return Cell("pill", text, cls)


def text(v: Any) -> str:
    """A value as the page prints it: ``None`` as nothing (for values joined into one cell)."""
    return "" if v is None else str(v)


@dataclass
class Row:
    cells: list[Any]
    cls: str = ""


@dataclass
class Table:
    """A table's columns (those in ``left`` left-aligned) and its first ``limit`` of ``total`` rows."""

    cols: list[Any]
    rows: list[Row]
    left: tuple[int, ...]
    total: int
    limit: int
    what: str


def table(cols: Sequence[Any], rows: Iterable[Sequence[Any]], row_classes: Sequence[str] | None = None,
          left: Sequence[int] = (0,), limit: int = MAX_TABLE_ROWS, what: str = "rows") -> Table:
    rows = list(rows)
    shown = [Row(list(row), row_classes[i] if row_classes and row_classes[i] else "")
             for i, row in enumerate(rows[:limit])]
    return Table(list(cols), shown, tuple(left), len(rows), limit, what)


def kv_list(items: Iterable[tuple[str, Any]], code: Sequence[str] = ()) -> list[tuple[str, Any, bool]]:
    """(key, value, in ``<code>``) per item; a missing value shows as ``-``."""
    return [(k, "-", False) if v is None or v == "" else (k, v, k in code) for k, v in items]


@dataclass
class Image:
    """An artifact image: ``state`` is ``ok`` (embedded as ``uri``), or why not: ``none`` (no artifact),
    ``large``, ``missing`` or ``type`` (not a PNG, JPEG or GIF)."""

    state: str
    name: str
    rel: Any = None
    size_mb: str = ""
    uri: str = ""
    caption: str = ""
    tall: bool = False


def _resolve(base_dir: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else base_dir / p


def image(base_dir: Path, rel: str | None, name: str, caption: str = "", tall: bool = False) -> Image:
    """The artifact as a data URI, or why it cannot be embedded."""
    if not rel:
        return Image("none", name)
    try:
        path = _resolve(base_dir, rel)
        if not path.is_file():  # a device (/dev/zero) or FIFO named in a report would never end or never start
            raise FileNotFoundError(rel)
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            return Image("large", name, rel, size_mb=f"{size / 1e6:.1f}")
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)  # bounded, should the file grow meanwhile
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return Image("missing", name, rel)
    mime = next((m for magic, m in _IMAGE_TYPES if data.startswith(magic)), None)
    if mime is None:
        return Image("type", name, rel)
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return Image("ok", name, rel, uri=uri, caption=caption, tall=tall)


def _eps_points(clean: float | None, by_eps: dict[str, Any]) -> list[tuple[float, float]]:
    pts = [(float(k), float(v)) for k, v in by_eps.items() if isinstance(v, (int, float))]
    pts.sort()
    if isinstance(clean, (int, float)):
        pts = [(0.0, float(clean))] + [p for p in pts if p[0] > 0]
    return pts


def _chart(series: list[Series], **kw: Any) -> Markup:
    return Markup(line_chart(series, **kw))


# ---------------------------------------------------------------------------------------------- steps


def _attack_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    m = step.get("metrics") or {}
    eps = r.get("eps") or []
    n = (r.get("data") or {}).get("n")
    figures = [
        ("clean accuracy", fmt.pct(r.get("clean_accuracy"))),
        (f"robust accuracy (eps {fmt.value(max(eps)) if eps else '-'})", fmt.pct(r.get("robust_accuracy"))),
        ("success rate", fmt.pct(m.get("success_rate"))),
        ("samples", fmt.value(n)),
        ("norm", str(r.get("norm", "-"))),
    ]
    chart = _chart(
        [Series("worst case over attacks", _eps_points(r.get("clean_accuracy"), r.get("robust_accuracy_by_eps") or {}),
                PALETTE[0])]
        + _per_attack_series(r),
        x_label=f"eps ({r.get('norm', '')})", y_label="accuracy", title="Accuracy vs eps (eps 0: clean accuracy)",
    )
    art = step.get("artifacts") or {}
    grid = image(base_dir, art.get("examples"), "examples",
                 "Adversarial examples: clean | perturbation (magnified) | adversarial, predicted label and "
                 "confidence.",
                 tall=True) if "examples" in art else None
    cols = ("attack", "eps", "robust acc", "success", "verified", "Linf mean/med", "L2 mean/med", "queries", "time")
    rows = [[
        x.get("attack"), fmt.value(x.get("eps")), fmt.pct(x.get("robust_accuracy")), fmt.pct(x.get("success_rate")),
        f"{text(x.get('verified'))}/{text(x.get('attacked'))}",
        f"{fmt.value(x.get('mean_linf'), 3)}/{fmt.value(x.get('median_linf'), 3)}",
        f"{fmt.value(x.get('mean_l2'), 3)}/{fmt.value(x.get('median_l2'), 3)}",
        fmt.value(x.get("mean_queries"), 4), fmt.seconds(x.get("time_s")),
    ] for x in r.get("results") or []]
    return {"view": "attack", "figures": figures, "chart": chart, "grid": grid, "results": table(cols, rows)}


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


def _defense_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    d = r["defense"]
    draws = f"; expected over {d.get('eval_draws')} seeded draws" if d.get("randomized") else ""
    spec = d.get("spec")
    figures = [
        ("clean accuracy, undefended", fmt.pct(d.get("clean_accuracy_undefended"))),
        ("clean accuracy, defended", fmt.pct(d.get("clean_accuracy"))),
        (f"honest robust accuracy (eps {fmt.value(max(d.get('eps') or [0]))})", fmt.pct(d.get("robust_accuracy"))),
        ("samples", fmt.value(d.get("n"))),
    ]
    series = []
    und = d.get("robust_accuracy_undefended_by_eps")
    if und:
        points = _eps_points(d.get("clean_accuracy_undefended"), und)
        series.append(Series("undefended", points, "#6b7280", dashed=True))
    for i, (mode, md) in enumerate((d.get("modes") or {}).items()):
        series.append(Series(mode, _eps_points(d.get("clean_accuracy"), md.get("robust_accuracy_by_eps") or {}),
                             PALETTE[i % len(PALETTE)]))
    chart = _chart(series, x_label=f"eps ({d.get('norm', '')})", y_label="accuracy",
                   title="Accuracy vs eps per adaptive mode (eps 0: clean accuracy)")
    try:
        cols, rows = fmt.defense_rows(d)
    except (KeyError, TypeError, ValueError):
        cols, rows = [], []
    notes = [f"{mode}: {md['note']}" for mode, md in (d.get("modes") or {}).items() if md.get("note")]
    return {"view": "defense", "spec": spec, "draws": draws, "figures": figures, "chart": chart,
            "modes": table(cols, rows) if cols else None, "notes": notes}


def _scan_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    verdict = str(r.get("verdict", "-"))
    targets = ", ".join(map(str, r.get("suspected_targets") or [])) or "none"
    names = ((r.get("model") or {}).get("spec") or {}).get("class_names") or []
    methods = ", ".join(r.get("methods") or [])
    time = fmt.seconds(r.get("time_s"))
    lines = [fmt.scan_evidence(name, ev) for name, ev in (r.get("evidence") or {}).items()]
    lines += [how for how in [fmt.scan_combination(r)] if how]
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
        row = [label, cname, fmt.value(c.get("mask_l1")), fmt.value(c.get("anomaly_index"), 3), fmt.pct(c.get("asr"))]
        if show_margin:
            row.append(fmt.value(margin))
        row.append(pill("FLAGGED", "fail") if c.get("flagged") else "")
        rows.append(row)
        classes_css.append("flagged" if c.get("flagged") else "")
    art = step.get("artifacts") or {}
    overview = None
    if art.get("triggers_overview"):
        overview = image(base_dir, art.get("triggers_overview"), "reconstructed triggers",
                         "Reconstructed triggers per class (mask, pattern, mask x pattern); flagged classes are "
                         "marked.")
    return {"view": "scan", "verdict": pill(verdict.upper(), verdict), "targets": targets, "methods": methods,
            "time": time, "evidence": lines, "overview": overview,
            "classes": table(cols, rows, classes_css, left=(0, 1), what="classes")}


def _detect_eval_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    method = r.get("method")  # absent: LCR
    s = r.get("sprt") or r.get("decisions") or {}
    mut = r.get("mutation") or {}
    auroc_all = r.get("auroc_all")
    v: dict[str, Any] = {"view": "detect_eval", "method": method,
                         "n_adversarial": sum((r.get("n_adversarial") or {}).values())}
    if not method:
        v.update(operator=mut.get("operator"), radius=fmt.value(mut.get("radius")),
                 mutations=r.get("lcr_mutations", "-"))
    v["n_normal"] = r.get("n_normal", "-")
    what = "decision" if method else "SPRT"
    v["figures"] = [
        ("AUROC (all)", fmt.value(auroc_all)),
        ("AUROC (mean over attacks)", fmt.value(r.get("auroc_mean"))),
        (f"{what} precision", fmt.pct(s.get("precision"))),
        (f"{what} recall", fmt.pct(s.get("recall"))),
        ("false positive rate", fmt.pct(s.get("false_positive_rate"))),
        ("ms per input", fmt.value(s.get("ms_per_input"), 3)),
    ]
    roc = r.get("roc") or {}
    fpr, tpr = roc.get("fpr") or [], roc.get("tpr") or []
    v["chart"] = v["roc_image"] = None  # neither: reports from before advaudit 0.1 hold no ROC points
    if fpr and len(fpr) == len(tpr):
        v["chart"] = _chart([Series(f"{method or 'LCR'} (AUROC {fmt.value(auroc_all)})", list(zip(fpr, tpr)),
                                    PALETTE[1], markers=False)],
                            x_label="false positive rate", y_label="true positive rate", x_max=1.0, percent_x=False,
                            percent_y=False, width=430, height=400, diagonal=True,
                            title=f"ROC curve, AUROC {fmt.value(auroc_all)}")
    elif (step.get("artifacts") or {}).get("roc"):
        v["roc_image"] = image(base_dir, step["artifacts"]["roc"], "ROC curve")
    t3 = r.get("table3") or {}
    sets = r.get("score") or {}
    kn = (sets.get("normal") if method else t3.get("kappa_nor")) or {}
    rows = [["normal", kn.get("n"), Cell("pm", fmt.value(kn.get("mean")), fmt.value(kn.get("ci99"), 3)), "-"]]
    for g, x in ((sets.get("adversarial") if method else t3.get("kappa_adv")) or {}).items():
        rows.append([g, x.get("n"), Cell("pm", fmt.value(x.get("mean")), fmt.value(x.get("ci99"), 3)),
                     fmt.value((r.get("auroc") or {}).get(g))])
    score = "score" if method else "LCR"
    v["auroc"] = table(("set", "n", f"{score} mean \u00b1 99% CI", "AUROC"), rows)
    keys = ("alpha", "beta", "mu", "sigma", "p0", "p1", "accuracy", "undecided", "mean_mutations",
            "mean_mutations_adversarial", "mean_mutations_normal")
    v["decisions"] = table(("figure", "value"), [[k.replace("_", " "), fmt.value(s.get(k))] for k in keys if k in s])
    return v


def _detect_run_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    t = r.get("totals") or {}
    cal = r.get("calibration") or {}
    figures = [
        ("inputs", fmt.value(t.get("n"))), ("adversarial", fmt.value(t.get("adversarial"))),
        ("normal", fmt.value(t.get("normal"))), ("undecided", fmt.value(t.get("undecided"))),
        ("threshold", fmt.value(cal.get("threshold"))) if "method" in r else ("kappa_nor",
                                                                              fmt.value(cal.get("kappa_nor"))),
        ("ms per input", fmt.value(t.get("ms_per_input"), 3)),
    ]
    inputs = r.get("inputs") or []
    css = ["flagged" if x.get("verdict") == "adversarial" else "" for x in inputs]
    if "method" in r:  # a detector other than LCR: one score per input
        rows = [[x.get("index"), x.get("verdict"), x.get("label"), fmt.value(x.get("score"), 4)] for x in inputs]
        cols: tuple[str, ...] = ("index", "verdict", "label", "score")
    else:
        rows = [[x.get("index"), x.get("verdict"), x.get("label"), fmt.value(x.get("lcr"), 3), x.get("mutations"),
                 fmt.value(x.get("error_bound"))] for x in inputs]
        cols = ("index", "verdict", "label", "LCR", "mutations", "error bound")
    return {"view": "detect_run", "figures": figures, "inputs": table(cols, rows, css, left=(0, 1), what="inputs")}


def _harden_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    h = r.get("hardened") or {}
    v = {"view": "harden", "method": r.get("method"), "eps": fmt.value(r.get("eps")), "path": h.get("path"),
         "sha256": h.get("sha256")}
    rows = []
    for x in r.get("summary") or []:
        label = str(x.get("metric", "")).replace("_", " ") + (f" ({x['suite']})" if x.get("suite") else "")
        ch = x.get("change")
        rows.append([label, fmt.pct(x.get("before")), fmt.pct(x.get("after")),
                     "-" if not isinstance(ch, (int, float)) else f"{100 * ch:+.1f} pts"])
    v["summary"] = table(("metric", "before", "after", "change"), rows)
    return v


def _repair_step(step: dict[str, Any], r: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    scan, fixed = r.get("scan") or {}, r.get("repaired") or {}
    verdict = str(scan.get("verdict", "-"))
    return {"view": "repair", "verdict": pill(verdict.upper(), verdict),
            "targets": ", ".join(map(str, scan.get("suspected_targets") or [])) or "none",
            "evidence": fmt.scan_evidence("neural-cleanse", scan), "repaired": r.get("after") is not None,
            "clean": fmt.pct((r.get("before") or {}).get("clean_accuracy")), "rounds": fmt.repair_rounds(r),
            "path": fixed.get("path"), "format": fixed.get("format"), "sha256": fixed.get("sha256"),
            "summary": table(("metric", "before", "after", "change"), fmt.repair_rows(r))}


def _step_body(step: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The data of the step's partial (``view`` names it), or why the step shows none."""
    if step.get("status") != "done" or not isinstance(step.get("report"), dict):
        return {"view": "failed", "error": step.get("error") or "no report"}
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
        if kind == "repair":
            return _repair_step(step, r, base_dir)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a malformed section must not sink the page
        return {"view": "broken", "error": f"{type(exc).__name__}: {exc}"}
    return {"view": "unknown", "kind": kind}


def step_section(i: int, step: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The data of ``templates/steps/section.html.j2`` for the ``i``-th step."""
    status = str(step.get("status", "done"))
    kind = str(step.get("kind", ""))
    artifacts = list((step.get("artifacts") or {}).items())
    metrics = step.get("metrics") or {}
    mtable = table(("metric", "value"), [[k, fmt.metric(k, v)] for k, v in metrics.items()]) if metrics else None
    return {"i": i, "name": step.get("name"), "kind": kind, "status": pill(status.upper(), status),
            "time": fmt.seconds(step.get("time_s")), "body": _step_body(step, base_dir), "metrics": mtable,
            "artifacts": artifacts}
