"""One self-contained HTML file for any advaudit report: inline CSS, inline SVG charts, images as data URIs.

No script, no external reference: the file can be attached to a CI run, mailed, or printed.  The page is
the Jinja2 template ``templates/report.html.j2`` (autoescaping on) with the style sheet
``templates/report.css``, the macros of ``templates/parts.html.j2`` (tables, figures, pills, images) and one
partial per step kind under ``templates/steps/``.  The Python side only prepares data: this module the page's
(verdict, gates, overview, fingerprint), :mod:`advaudit.report.html_steps` each step's.  The templates escape
every value they print (model paths and class names are untrusted input).
"""

from __future__ import annotations

from functools import lru_cache
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from .. import __version__
from . import fmt
from .html_steps import Cell, Table, kv_list, pill, step_section, table
from .normalize import as_audit

__all__ = ["CSS", "render_html"]

CSS = (resources.files("advaudit.report") / "templates" / "report.css").read_text(encoding="utf-8")
"""The page's style sheet, a package file (every page inlines it: the file stays self-contained)."""


def e(v: Any) -> str:
    """HTML-escape anything (quotes too: safe in attributes), None as nothing."""
    return escape("" if v is None else str(v), quote=True)


def _escaped(value: Any) -> Any:
    """Every value the templates print, escaped by :func:`e` (``html.escape`` with quotes, None as nothing);
    Markup (the page's CSS, the SVG charts, what a macro printed) passes as it is."""
    return value if isinstance(value, Markup) else Markup(e(value))


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("advaudit.report", "templates"), autoescape=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined, finalize=_escaped,
    )
    env.tests["cell"] = lambda v: isinstance(v, Cell)
    return env.get_template("report.html.j2")


def _verdict_line(a: dict[str, Any], passed: int, total: int, failed_steps: list[dict[str, Any]]) -> str:
    if a.get("verdict") == "pass":
        return "all gates passed" if total else "no gates were set"
    bits = []
    if total - passed:
        bits.append(f"{total - passed} gate{'s' if total - passed != 1 else ''} failed")
    if failed_steps:
        bits.append(f"{len(failed_steps)} step{'s' if len(failed_steps) != 1 else ''} failed")
    return ", ".join(bits) or "the report did not pass"


def _gates_table(a: dict[str, Any]) -> Table | None:
    gates = a.get("gates") or []
    if not gates:
        return None
    rows, css = [], []
    for g in gates:
        baseline = fmt.value(g.get("baseline"))
        if g.get("regressed"):
            baseline += " (regressed)"
        rows.append([
            Cell("code", g.get("gate")), fmt.value(g.get("value")), fmt.value(g.get("threshold")), baseline,
            pill("PASS", "pass") if g.get("passed") else pill("FAIL", "fail"), fmt.one_line(g.get("reason", "")),
        ])
        css.append("" if g.get("passed") else "bad")
    return table(("gate", "value", "threshold", "baseline", "result", "reason"), rows, css, left=(0, 5))


def _baseline(a: dict[str, Any]) -> dict[str, str] | None:
    b = a.get("baseline")
    if not isinstance(b, dict):
        return None
    match = b.get("sha256_match")
    if match is None and b.get("model_sha256"):
        match = b["model_sha256"] == (a.get("model") or {}).get("sha256")
    same = "" if match is None else ("; same model" if match else "; a different model (sha256 differs)")
    return {"path": str(b.get("path")), "tolerance": fmt.value(b.get("tolerance")), "match": same}


def _overview_table(a: dict[str, Any]) -> Table | None:
    steps = a.get("steps") or []
    if len(steps) < 2:
        return None
    rows = []
    for i, s in enumerate(steps):
        name, v = fmt.headline(s)
        status = str(s.get("status", ""))
        rows.append([Cell("link", s.get("name"), f"#step-{i}"), s.get("kind"), pill(status.upper(), status),
                     f"{name} {fmt.metric(name, v)}" if name else "-", fmt.seconds(s.get("time_s"))])
    return table(("step", "kind", "status", "headline", "time"), rows, left=(0, 1, 3))


def _fingerprint(a: dict[str, Any]) -> dict[str, list[tuple[str, Any, bool]]]:
    m = a.get("model") or {}
    env = a.get("environment") or {}
    meta = a.get("meta") or {}
    b: dict[str, Any] = a["baseline"] if isinstance(a.get("baseline"), dict) else {}
    return {
        "model_kv": kv_list([
            ("path", m.get("path")), ("sha256", m.get("sha256")), ("format", m.get("format")),
            ("gradients", m.get("gradient_source")), ("gradients note", m.get("gradients_note")),
            ("logits from", m.get("logits_from")),
            ("output", m.get("output_kind")), ("classes", m.get("num_classes")),
            ("value range", ((m.get("spec") or {}).get("range"))),
        ], code=("path", "sha256")),
        "env_kv": kv_list([
            ("advaudit", env.get("advaudit") or meta.get("advaudit")),
            ("python", env.get("python") or meta.get("python")),
            ("torch", env.get("torch") or meta.get("torch")), ("onnxruntime", env.get("onnxruntime")),
            ("numpy", env.get("numpy") or meta.get("numpy")), ("platform", env.get("platform") or meta.get("platform")),
            ("device", env.get("device")), ("workers", env.get("workers")),
        ]),
        "run_kv": kv_list([
            ("seed", a.get("seed")), ("command", a.get("command")), ("created", meta.get("created")),
            ("config sha256", a.get("config_sha256")), ("baseline", b.get("path")), ("schema", a.get("schema")),
        ], code=("command", "config sha256", "baseline")),
    }


def render_html(report: dict[str, Any], base_dir: Path | str = ".") -> str:
    """The whole report as one self-contained HTML page; artifact paths resolve against ``base_dir``."""
    a = as_audit(report)
    base = Path(base_dir)
    model = a.get("model") or {}
    passed, total = fmt.gate_counts(a)
    steps = a.get("steps") or []
    failed_steps = [s for s in steps if s.get("status") != "done"]
    source = str(a.get("source_kind", "audit"))
    facts = [("model", model.get("path", "-"), True), ("sha256", model.get("sha256", "-"), True),
             ("gates", f"{passed} of {total} passed", False),
             ("steps", f"{len(steps) - len(failed_steps)} of {len(steps)} done", False)]
    created = (a.get("meta") or {}).get("created")
    if created:
        facts.append(("created", created, False))
    return _template().render(
        title=f"advaudit {a.get('verdict', '').upper()}: {model.get('path', '')}", css=Markup(CSS),
        verdict="pass" if a.get("verdict") == "pass" else "fail",
        kicker="advaudit audit" if source == "audit" else f"advaudit {source}",
        verdict_line=_verdict_line(a, passed, total, failed_steps), facts=facts,
        gates_table=_gates_table(a), baseline=_baseline(a), overview_table=_overview_table(a),
        steps=[step_section(i, s, base) for i, s in enumerate(steps)],
        warnings=a.get("warnings") or [], **_fingerprint(a),
        version=__version__, schema=a.get("schema"), article=_article(source), source_kind=a.get("source_kind"),
    )


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
