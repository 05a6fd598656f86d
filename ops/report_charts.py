"""SVG charts for the HTML report, drawn here in Python: no JavaScript library, no network.

Why our own: the report must open anywhere, offline, years later, and stay small. A series of
any length is reduced to at most two points per pixel column (its minimum and maximum there,
in time order), so a million-event backtest draws the same few hundred kilobytes as a short
run and every spike stays visible. Markers (fills, risk events) are thinned the same way: at
most one per pixel column and kind. Every chart is an ``<svg class="chart">`` whose data are
``<path class="series">`` / ``<rect class="bar">`` / ``<g class="marker">`` elements, with
``data-points`` on the svg: the count of drawn data points (the browser test reads it).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

W, H = 960, 240
ML, MR, MT, MB = 78, 16, 26, 34  # margins: left (y labels), right, top (title), bottom (x axis)
PALETTE = ("#1f6feb", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#0b7285", "#e67700")
BUY, SELL, RISK = "#2b8a3e", "#c92a2a", "#e8590c"


@dataclass
class Series:
    name: str
    x: np.ndarray  # ns
    y: np.ndarray
    color: str = PALETTE[0]
    step: bool = False  # a position: flat until the next change
    fill: bool = False  # shade between the line and zero (drawdown)


@dataclass
class Markers:
    name: str
    x: np.ndarray
    y: np.ndarray
    color: str
    shape: str = "up"  # up | down | dot
    label: Callable[[int], str] | None = None  # the hover text of marker i (of x), if any
    index: np.ndarray | None = None  # after thinning: which of the original markers are kept


@dataclass
class Chart:
    title: str
    y_label: str = ""
    series: list[Series] = field(default_factory=list)
    markers: list[Markers] = field(default_factory=list)
    events: list[tuple[int, str]] = field(default_factory=list)  # vertical lines: (ns, label)
    x0: int | None = None  # the time axis's origin (ns); default: the first point
    x1: int | None = None


# --- reduction ------------------------------------------------------------------------------------
def columns(x: np.ndarray, x0: float, x1: float, width: int) -> np.ndarray:
    """The pixel column (0..width-1) of each time."""
    span = max(x1 - x0, 1.0)
    c = ((np.asarray(x, dtype=np.float64) - x0) * ((width - 1) / span)).astype(np.int64)
    return np.clip(c, 0, width - 1)


def minmax_reduce(x: np.ndarray, y: np.ndarray, x0: float, x1: float, width: int):
    """At most two points per pixel column: each column's min and max, in the order they came
    (x must be ascending). Returns (x, y) of the kept points."""
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.float64)
    if x.size <= 2 * width:
        return x, y
    col = columns(x, x0, x1, width)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    ends = np.r_[starts[1:], x.size]
    lo = np.empty(starts.size, dtype=np.int64)
    hi = np.empty(starts.size, dtype=np.int64)
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):  # one per column: <= width
        seg = y[a:b]
        lo[k] = a + int(np.argmin(seg))
        hi[k] = a + int(np.argmax(seg))
    keep = np.unique(np.concatenate([lo, hi]))  # sorted: time order kept
    return x[keep], y[keep]


def thin_markers(m: Markers, x0: float, x1: float, width: int) -> Markers:
    """One marker per pixel column (the first); ``index`` says which were kept."""
    if m.x.size <= width:
        return Markers(m.name, m.x, m.y, m.color, m.shape, m.label, np.arange(m.x.size))
    col = columns(m.x, x0, x1, width)
    _, first = np.unique(col, return_index=True)
    return Markers(m.name, m.x[first], m.y[first], m.color, m.shape, m.label, first)


# --- axes -----------------------------------------------------------------------------------------
def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) * 0.01 or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def fmt_num(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.4g}k"
    if a >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.4g}"


def fmt_elapsed(s: float, span: float) -> str:
    if span >= 7200:
        return f"{s / 3600:.1f}h"
    if span >= 180:
        return f"{s / 60:.1f}m"
    return f"{s:.3g}s" if span < 10 else f"{s:.0f}s"


def fmt_ns(v: float) -> str:
    if v >= 1e9:
        return f"{v / 1e9:.3g}s"
    if v >= 1e6:
        return f"{v / 1e6:.3g}ms"
    if v >= 1e3:
        return f"{v / 1e3:.3g}µs"
    return f"{v:.0f}ns"


class _Frame:
    """Data-to-pixel mapping of one chart."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float) -> None:
        pad = (y1 - y0) * 0.05 or (abs(y0) * 0.01 or 1.0)
        self.x0, self.x1, self.y0, self.y1 = x0, max(x1, x0 + 1), y0 - pad, y1 + pad
        self.pw, self.ph = W - ML - MR, H - MT - MB

    def px(self, x: np.ndarray) -> np.ndarray:
        return ML + (np.asarray(x, dtype=np.float64) - self.x0) * (self.pw / (self.x1 - self.x0))

    def py(self, y: np.ndarray) -> np.ndarray:
        return MT + (self.y1 - np.asarray(y, dtype=np.float64)) * (self.ph / (self.y1 - self.y0))


def _path(xs: np.ndarray, ys: np.ndarray, step: bool) -> str:
    if step and xs.size > 1:  # horizontal then vertical: the value holds until it changes
        sx = np.repeat(xs, 2)[1:]
        sy = np.repeat(ys, 2)[:-1]
        xs, ys = sx, sy
    pts = [f"{a:.1f},{b:.1f}" for a, b in zip(xs.tolist(), ys.tolist(), strict=True)]
    return "M" + " L".join(pts)


def _marker(shape: str, x: float, y: float, color: str, label: str) -> str:
    t = f"<title>{html.escape(label)}</title>" if label else ""
    if shape == "dot":
        body = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>'
    else:
        d = -1 if shape == "up" else 1
        body = (
            f'<path d="M{x:.1f},{y:.1f} l-4,{-d * 7} h8 z" fill="{color}" stroke="white" '
            'stroke-width="0.5"/>'
        )
    return f'<g class="marker">{t}{body}</g>'


def _x_axis(f: _Frame, origin: float) -> list[str]:
    span_s = (f.x1 - f.x0) / 1e9
    out = []
    for t in nice_ticks((f.x0 - origin) / 1e9, (f.x1 - origin) / 1e9, 8):
        x = float(f.px(np.array([origin + t * 1e9]))[0])
        if ML - 1 <= x <= W - MR + 1:
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{H - MB}" y2="{H - MB + 4}" class="ax"/>'
            )
            lbl = html.escape(fmt_elapsed(t, span_s))
            out.append(f'<text x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle">{lbl}</text>')
    return out


def tick_labels(ticks: list[float]) -> list[str]:
    """Axis labels exact enough to tell neighbours apart: as many decimals as the step needs
    (999,950 / 999,975, 190.02 / 190.04); millions abbreviated only when the step is that big."""
    if len(ticks) < 2:
        return [fmt_num(v) for v in ticks]
    step, unit, suffix = abs(ticks[1] - ticks[0]), 1.0, ""
    if step >= 1e5:
        unit, suffix = 1e6, "M"
    s = step / unit
    dec = max(0, -math.floor(math.log10(s) + 1e-9))
    while dec < 9 and abs(s * 10**dec - round(s * 10**dec)) > 1e-6:  # a 2.5 step: one more
        dec += 1
    return [f"{v / unit:,.{dec}f}{suffix}" for v in ticks]


def _y_axis(f: _Frame) -> list[str]:
    out = []
    ticks = nice_ticks(f.y0, f.y1, 5)
    for v, label in zip(ticks, tick_labels(ticks), strict=True):
        y = float(f.py(np.array([v]))[0])
        out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    return out


def _svg(title: str, body: list[str], points: int, legend: list[tuple[str, str]]) -> str:
    leg = []
    x = W - MR
    for name, color in reversed(legend):
        w = 22 + 7 * len(name)
        x -= w
        leg.append(
            f'<rect x="{x}" y="8" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 13}" y="17">{html.escape(name)}</text>'
        )
    return (
        f'<svg class="chart" data-points="{points}" viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" role="img" aria-label="{html.escape(title)}">'
        f'<text x="{ML}" y="17" class="title">{html.escape(title)}</text>'
        + "".join(leg)
        + "".join(body)
        + "</svg>"
    )


# --- the chart kinds ------------------------------------------------------------------------------
def time_chart(c: Chart) -> str:
    """Lines (and step lines) over time, with markers and vertical event lines."""
    xs = [s.x for s in c.series if s.x.size] + [m.x for m in c.markers if m.x.size]
    if not xs:
        return ""
    allx = np.concatenate(xs)
    x0 = float(c.x0 if c.x0 is not None else allx.min())
    x1 = float(c.x1 if c.x1 is not None else allx.max())
    pw = W - ML - MR
    reduced = [(s, *minmax_reduce(s.x, s.y, x0, x1, pw)) for s in c.series if s.x.size]
    thinned = [thin_markers(m, x0, x1, pw) for m in c.markers if m.x.size]
    ys = [r[2] for r in reduced] + [m.y for m in thinned]
    ys += [np.zeros(1)] if any(s.fill for s in c.series) else []
    ally = np.concatenate(ys)
    f = _Frame(x0, x1, float(ally.min()), float(ally.max()))
    body = _y_axis(f) + _x_axis(f, x0)
    body.append(f'<rect x="{ML}" y="{MT}" width="{pw}" height="{f.ph}" class="plot"/>')
    points = 0
    for s, rx, ry in reduced:
        px, py = f.px(rx), f.py(ry)
        d = _path(px, py, s.step)
        if s.fill:
            z = float(f.py(np.array([0.0]))[0])
            area = d + f" L{px[-1]:.1f},{z:.1f} L{px[0]:.1f},{z:.1f} Z"
            body.append(f'<path d="{area}" fill="{s.color}" fill-opacity="0.18" stroke="none"/>')
        body.append(
            f'<path class="series" data-name="{html.escape(s.name)}" d="{d}" fill="none" '
            f'stroke="{s.color}" stroke-width="1.4"/>'
        )
        points += int(rx.size)
    for t, label in c.events:
        x = float(f.px(np.array([t]))[0])
        body.append(
            f'<g class="event"><title>{html.escape(label)}</title><line x1="{x:.1f}" '
            f'x2="{x:.1f}" y1="{MT}" y2="{H - MB}" stroke="{RISK}" stroke-dasharray="3,3"/></g>'
        )
    for m in thinned:
        px, py = f.px(m.x), f.py(m.y)
        for k in range(m.x.size):
            body.append(
                _marker(
                    m.shape,
                    px[k],
                    py[k],
                    m.color,
                    m.label(int(m.index[k])) if m.label and m.index is not None else m.name,
                )
            )
        points += int(m.x.size)
    legend = [(s.name, s.color) for s in c.series] + [(m.name, m.color) for m in c.markers]
    return _svg(c.title, body, points, legend)


def bar_chart(title: str, categories: list[str], groups: dict[str, list[float]]) -> str:
    """Grouped bars (one group per category, one bar per key of ``groups``), negative values
    below the zero line: the P&L of each strategy."""
    if not categories:
        return ""
    vals = np.array(list(groups.values()), dtype=np.float64)
    f = _Frame(0, 1, min(0.0, float(vals.min())), max(0.0, float(vals.max())))
    body = _y_axis(f)
    z = float(f.py(np.array([0.0]))[0])
    body.append(f'<line x1="{ML}" x2="{W - MR}" y1="{z:.1f}" y2="{z:.1f}" class="ax"/>')
    slot = f.pw / len(categories)
    bw = slot * 0.8 / max(len(groups), 1)
    legend = []
    for g, (name, row) in enumerate(groups.items()):
        color = PALETTE[g % len(PALETTE)]
        legend.append((name, color))
        for k, v in enumerate(row):
            x = ML + k * slot + slot * 0.1 + g * bw
            y = float(f.py(np.array([v]))[0])
            top, h = min(y, z), max(abs(z - y), 0.5)
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{top:.1f}" width="{bw - 1:.1f}" '
                f'height="{h:.1f}" fill="{color}"><title>{html.escape(categories[k])} '
                f"{html.escape(name)}: {v:+,.2f}</title></rect>"
            )
    for k, cat in enumerate(categories):
        x = ML + (k + 0.5) * slot
        body.append(
            f'<text x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle">{html.escape(cat)}</text>'
        )
    return _svg(title, body, int(vals.size), legend)


def histogram_chart(title: str, edges_ns: Sequence[float], counts: Sequence[int]) -> str:
    """Latency counts over log-spaced bins (ns), the x axis in time units."""
    if not counts or not sum(counts):
        return ""
    e = np.log10(np.asarray(edges_ns, dtype=np.float64))
    cnt = np.asarray(counts, dtype=np.float64)
    f = _Frame(float(e[0]), float(e[-1]), 0.0, float(cnt.max()))
    f.y0 = 0.0
    body = _y_axis(f)
    for k in range(cnt.size):
        if not cnt[k]:
            continue
        x0, x1 = float(f.px(np.array([e[k]]))[0]), float(f.px(np.array([e[k + 1]]))[0])
        y = float(f.py(np.array([cnt[k]]))[0])
        lbl = f"{fmt_ns(10 ** e[k])}–{fmt_ns(10 ** e[k + 1])}: {int(cnt[k])}"
        body.append(
            f'<rect class="bar" x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
            f'height="{H - MB - y:.1f}" fill="{PALETTE[0]}"><title>{lbl}</title></rect>'
        )
    for p in range(math.ceil(e[0]), math.floor(e[-1]) + 1):
        x = float(f.px(np.array([p]))[0])
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{H - MB}" y2="{H - MB + 4}" class="ax"/>')
        body.append(
            f'<text x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle">{fmt_ns(10.0**p)}</text>'
        )
    return _svg(title, body, int(np.count_nonzero(cnt)), [])
