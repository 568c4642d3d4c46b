"""Inline SVG for the HTML report (dlc.report.html): the network drawn as a layered DAG, and small line/bar charts.

Plain SVG elements that a browser draws from a file on disk: no Graphviz, no JavaScript, no fonts or images fetched.
Every piece of text goes through `esc` (network and layer names come from a .dln, and the report treats whatever a
run holds as untrusted); every number is formatted here, so no caller's string reaches an attribute unescaped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

from dlc import ir

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777")


def esc(value: object) -> str:
    """HTML/SVG-escaped text (quotes too, so the result is safe in an attribute)."""
    return escape(str(value), quote=True)


def _short(text: str, n: int) -> str:
    one = " ".join(str(text).split())
    return one if len(one) <= n else one[: n - 1] + "…"


def _num(x: float) -> str:
    """A coordinate: two decimals at most, never an exponent."""
    return f"{x:.2f}".rstrip("0").rstrip(".")


# ------------------------------------------------------------------------------------------------ the network

_W, _H, _GAP, _ROW = 176, 62, 74, 28       # node box, gap between columns, gap between rows
_PAD = 16


def _output_kind(lay: ir.Layer) -> str:
    out = lay.output
    return f"choice ({len(out.labels)} labels)" if out.kind == "choice" else out.kind


def network_svg(graph: ir.Graph, *, uid: str = "net") -> str:
    """The graph left to right: inputs (ellipses), then each layer in the column after its deepest parent; trainable
    layers filled blue, fixed ones grey, the output with a double border. An edge that skips columns (a residual
    input) arcs above the drawing so it does not run through the layers in between. Hovering a layer shows its
    prompt (an SVG <title>)."""
    depth: dict[str, int] = {n: 0 for n in graph.inputs}
    for name in graph.order:
        depth[name] = 1 + max((depth.get(p, 0) for p in graph.layers[name].parents), default=0)
    columns: dict[int, list[str]] = {}
    for name in list(graph.inputs) + list(graph.order):
        columns.setdefault(depth[name], []).append(name)
    rows = max(len(c) for c in columns.values())
    skips = any(depth[name] - depth[p] > 1 for name in graph.order for p in graph.layers[name].parents)
    top = _PAD + (34 if skips else 0)
    width = _PAD * 2 + len(columns) * _W + (len(columns) - 1) * _GAP
    height = top + rows * _H + (rows - 1) * _ROW + _PAD
    pos: dict[str, tuple[float, float]] = {}           # top-left corner of each node
    for col, names in columns.items():
        offset = (rows - len(names)) * (_H + _ROW) / 2
        for r, name in enumerate(names):
            pos[name] = (_PAD + col * (_W + _GAP), top + offset + r * (_H + _ROW))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="network" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" aria-label="{esc("network " + graph.name)}">',
           f'<defs><marker id="{esc(uid)}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#64748b"/></marker></defs>']
    for name in graph.order:                           # edges first, so boxes are drawn over their ends
        x2, y2 = pos[name][0], pos[name][1] + _H / 2
        for p in graph.layers[name].parents:
            x1, y1 = pos[p][0] + _W, pos[p][1] + _H / 2
            if depth[name] - depth[p] > 1:
                arc = _PAD / 2
                d = (f"M{_num(x1)},{_num(y1)} C{_num(x1 + _GAP)},{_num(arc)} {_num(x2 - _GAP)},{_num(arc)} "
                     f"{_num(x2 - 2)},{_num(y2)}")
            else:
                mid = (x1 + x2) / 2
                d = f"M{_num(x1)},{_num(y1)} C{_num(mid)},{_num(y1)} {_num(mid)},{_num(y2)} {_num(x2 - 2)},{_num(y2)}"
            out.append(f'<path d="{d}" fill="none" stroke="#64748b" stroke-width="1.5" '
                       f'marker-end="url(#{esc(uid)}-arrow)"/>')
    for name in graph.inputs:
        x, y = pos[name]
        out.append(f'<g class="node input"><title>{esc("input " + name)}</title>'
                   f'<ellipse cx="{_num(x + _W / 2)}" cy="{_num(y + _H / 2)}" rx="{_num(_W / 2 - 18)}" '
                   f'ry="{_num(_H / 2 - 6)}" fill="#fef9c3" stroke="#a16207" stroke-width="1.5"/>'
                   f'<text x="{_num(x + _W / 2)}" y="{_num(y + _H / 2 - 2)}" text-anchor="middle" '
                   f'font-weight="600">{esc(_short(name, 20))}</text>'
                   f'<text x="{_num(x + _W / 2)}" y="{_num(y + _H / 2 + 14)}" text-anchor="middle" '
                   'class="sub">input</text></g>')
    for name in graph.order:
        lay = graph.layers[name]
        x, y = pos[name]
        fill, stroke = ("#dbeafe", "#1d4ed8") if lay.trainable else ("#f1f5f9", "#475569")
        tip = f"layer {name}: {'trainable' if lay.trainable else 'fixed'} prompt: {lay.prompt or '(empty)'}"
        parts = [f'<g class="node layer{" output" if name == graph.output else ""}"><title>{esc(tip)}</title>',
                 f'<rect x="{_num(x)}" y="{_num(y)}" width="{_W}" height="{_H}" rx="8" fill="{fill}" '
                 f'stroke="{stroke}" stroke-width="1.5"/>']
        if name == graph.output:
            parts.append(f'<rect x="{_num(x + 4)}" y="{_num(y + 4)}" width="{_W - 8}" height="{_H - 8}" rx="6" '
                         f'fill="none" stroke="{stroke}" stroke-width="1"/>')
        lines = [(_short(name, 22), "600", ""), (_short(f"{lay.template.name} · {_output_kind(lay)}", 28), "", "sub"),
                 (_short(("trainable" if lay.trainable else "fixed") + f" · model {lay.model}", 28), "", "sub")]
        for i, (text, weight, cls) in enumerate(lines):
            attrs = (f' font-weight="{weight}"' if weight else "") + (f' class="{cls}"' if cls else "")
            parts.append(f'<text x="{_num(x + _W / 2)}" y="{_num(y + 20 + i * 15)}" text-anchor="middle"{attrs}>'
                         f'{esc(text)}</text>')
        parts.append("</g>")
        out.append("".join(parts))
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ charts

@dataclass
class Series:
    """One line (or bars) of a chart: (x, y) points in x order; `labels` are the hover texts of the points."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    bars: bool = False
    dashed: bool = False
    labels: Sequence[str] = field(default_factory=list)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _tick_text(v: float) -> str:
    if v != 0 and (abs(v) >= 10000):
        return f"{v / 1000:,.0f}k"
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.3g}"


def chart_svg(series: Sequence[Series], *, title: str, y_label: str, x_label: str = "iteration",
              y_range: tuple[float, float] | None = None, width: int = 460, height: int = 230) -> str:
    """A chart with axes, round ticks, a legend, and a <title> per point (its exact value). With no points at all
    it is an empty frame that says so, so the report keeps its layout."""
    left, right, top, bottom = 58, 14, 34, 40
    pw, ph = width - left - right, height - top - bottom
    pts = [p for s in series for p in s.points if math.isfinite(p[1])]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" aria-label="{esc(title)}">',
           f'<text x="{left}" y="16" font-weight="600">{esc(title)}</text>']
    if not pts:
        out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#f8fafc" stroke="#cbd5e1"/>')
        out.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" class="sub">not recorded '
                   'for this run</text></svg>')
        return "\n".join(out)
    xs = [p[0] for p in pts]
    x_lo, x_hi = min(xs), max(xs)
    if any(s.bars for s in series):
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    elif x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    ys = [p[1] for p in pts] + ([0.0] if any(s.bars for s in series) else [])
    y_lo, y_hi = y_range if y_range is not None else (min(ys), max(ys))
    if y_range is None:
        yt = nice_ticks(y_lo, y_hi)
        y_lo, y_hi = min(yt[0], y_lo), max(yt[-1], y_hi)
    else:
        yt = nice_ticks(y_lo, y_hi)
    if y_hi == y_lo:
        y_hi = y_lo + 1

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y_lo) / (y_hi - y_lo) * ph

    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#ffffff" stroke="#cbd5e1"/>')
    for t in yt:
        if y_lo - 1e-12 <= t <= y_hi + 1e-12:
            y = _num(sy(t))
            out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y}" y2="{y}" stroke="#e2e8f0"/>'
                       f'<text x="{left - 6}" y="{y}" dy="4" text-anchor="end" class="tick">{esc(_tick_text(t))}</text>')
    step = max(1, math.ceil((math.floor(x_hi) - math.ceil(x_lo) + 1) / 12))
    for xv in range(math.ceil(x_lo), math.floor(x_hi) + 1, step):
        x = _num(sx(xv))
        out.append(f'<text x="{x}" y="{top + ph + 16}" text-anchor="middle" class="tick">{xv}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" class="sub">{esc(x_label)}</text>')
    out.append(f'<text transform="translate(14,{top + ph / 2}) rotate(-90)" text-anchor="middle" class="sub">'
               f'{esc(y_label)}</text>')
    bar_series = [s for s in series if s.bars]
    bw = min(28.0, pw / max(1.0, (x_hi - x_lo)) * 0.7 / max(1, len(bar_series)))
    for i, s in enumerate(series):
        good = [(k, p) for k, p in enumerate(s.points) if math.isfinite(p[1])]
        if s.bars:
            j = bar_series.index(s)
            for k, (x, y) in good:
                bx = sx(x) - bw * len(bar_series) / 2 + j * bw
                y0, y1 = sy(max(0.0, y_lo)), sy(y)
                tip = s.labels[k] if k < len(s.labels) else f"{s.name}: {y:g}"
                out.append(f'<rect x="{_num(bx)}" y="{_num(min(y0, y1))}" width="{_num(bw)}" '
                           f'height="{_num(abs(y0 - y1))}" fill="{esc(s.color)}" opacity="0.85"><title>{esc(tip)}</title>'
                           '</rect>')
            continue
        if len(good) > 1:
            d = " ".join(f"{_num(sx(x))},{_num(sy(y))}" for _, (x, y) in good)
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            out.append(f'<polyline points="{d}" fill="none" stroke="{esc(s.color)}" stroke-width="2"{dash}/>')
        for k, (x, y) in good:
            tip = s.labels[k] if k < len(s.labels) else f"{s.name} at {x:g}: {y:.4g}"
            out.append(f'<circle cx="{_num(sx(x))}" cy="{_num(sy(y))}" r="3.5" fill="{esc(s.color)}">'
                       f'<title>{esc(tip)}</title></circle>')
    lx = left + pw
    for i, s in enumerate(reversed(series)):        # the legend, right-aligned above the plot
        label = _short(s.name, 30)
        lx -= 16 + 7 * len(label)
        out.append(f'<rect x="{_num(lx)}" y="{top - 14}" width="10" height="10" fill="{esc(s.color)}"/>'
                   f'<text x="{_num(lx + 13)}" y="{top - 5}" class="tick">{esc(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


__all__ = ["PALETTE", "Series", "chart_svg", "esc", "network_svg", "nice_ticks"]
