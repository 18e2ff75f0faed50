"""Small hand-drawn SVG line charts (no plotting library, no script): accuracy vs eps, ROC."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False
    markers: bool = True
    tooltips: list[str] = field(default_factory=list)


def nice_step(span: float, target_ticks: int = 5) -> float:
    """A 1/2/2.5/5 x 10^k step that cuts ``span`` into about ``target_ticks`` intervals."""
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / target_ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _ticks(hi: float, step: float) -> list[float]:
    n = int(math.floor(hi / step + 1e-9))
    return [round(i * step, 12) for i in range(n + 1)]


def _fmt_tick(v: float, percent: bool) -> str:
    return f"{100 * v:.0f}%" if percent else f"{v:g}"


def _legend_rows(series: Sequence[Series], avail: float) -> int:
    rows, x = 1, 0.0
    for s in series:
        w = 36 + 6.8 * len(s.label) + 10
        if x + w > avail and x > 0:
            rows, x = rows + 1, 0.0
        x += w
    return rows


def line_chart(
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    x_max: float | None = None,
    y_max: float = 1.0,
    percent_x: bool = False,
    percent_y: bool = True,
    width: int = 560,
    height: int = 340,
    diagonal: bool = False,
    title: str = "",
) -> str:
    """An inline ``<svg>`` line chart of ``series`` over [0, x_max] x [0, y_max], with a legend below."""
    left, right, top, bottom = 58, 18, 28 if title else 14, 46
    legend_rows = _legend_rows(series, width - left) if len(series) > 1 else 0
    total_h = height + legend_rows * 20
    pw, ph = width - left - right, height - top - bottom
    xs = [p[0] for s in series for p in s.points if math.isfinite(p[0])]
    if x_max is None or not x_max > 0:
        x_max = max(xs, default=1.0) or 1.0
    x_step = nice_step(x_max)
    x_hi = math.ceil(x_max / x_step - 1e-9) * x_step
    y_step = nice_step(y_max)

    def px(x: float) -> float:
        return left + pw * (x / x_hi)

    def py(y: float) -> float:
        return top + ph * (1 - min(max(y, 0.0), y_max) / y_max)

    out = [
        f'<svg class="chart" width="{width}" height="{total_h}" '
        f'viewBox="0 0 {width} {total_h}" role="img" aria-label="{escape(title or y_label)}">',
        f'<rect x="0" y="0" width="{width}" height="{total_h}" fill="#ffffff"/>',
    ]
    if title:
        out.append(f'<text x="{left}" y="18" class="ct">{escape(title)}</text>')
    for t in _ticks(y_max, y_step):
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                   f'class="tick">{_fmt_tick(t, percent_y)}</text>')
    for t in _ticks(x_hi, x_step):
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle" '
                   f'class="tick">{_fmt_tick(t, percent_x)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>')
    if diagonal:
        out.append(f'<line x1="{px(0):.1f}" y1="{py(0):.1f}" x2="{px(min(x_hi, y_max)):.1f}" '
                   f'y2="{py(min(x_hi, y_max)):.1f}" class="diag"/>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 36}" text-anchor="middle" '
               f'class="axis">{escape(x_label)}</text>')
    out.append(
        f'<text x="14" y="{top + ph / 2:.1f}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 14 {top + ph / 2:.1f})">{escape(y_label)}</text>'
    )
    for s in reversed(series):  # the first series is drawn last, on top
        pts = [(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)]
        if not pts:
            continue
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<polyline points="{coords}" fill="none" stroke="{s.color}" stroke-width="2.2"{dash}/>')
        if s.markers:
            for i, (x, y) in enumerate(pts):
                tip = (s.tooltips[i] if i < len(s.tooltips)
                       else f"{s.label}: {_fmt_tick(x, percent_x)}, {_fmt_tick(y, percent_y)}")
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.6" '
                           f'fill="{s.color}"><title>{escape(tip)}</title></circle>')
    if len(series) > 1:
        lx, ly = float(left), height + 4.0
        for s in series:
            w = 36 + 6.8 * len(s.label)
            if lx + w + 10 - left > width - left and lx > left:
                lx, ly = float(left), ly + 20
            dash = ' stroke-dasharray="6 4"' if s.dashed else ""
            out.append(f'<line x1="{lx:.1f}" y1="{ly:.1f}" x2="{lx + 22:.1f}" y2="{ly:.1f}" stroke="{s.color}" '
                       f'stroke-width="3"{dash}/>')
            out.append(f'<text x="{lx + 28:.1f}" y="{ly + 4:.1f}" class="legend">{escape(s.label)}</text>')
            lx += w + 10
    out.append("</svg>")
    return "".join(out)
