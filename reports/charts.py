"""Charts as data (`LineChart`, `BarChart`, `Histogram`) and their rendering to self-contained inline SVG.

No JavaScript and no external files: every chart is one `<svg>` element with presentation attributes, so it
renders the same inside the HTML report, in a browser on its own, or pasted elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from html import escape
from typing import Any, Sequence

import numpy as np

from recs.reports.format import format_number, tick_label

# Observable's 10-colour categorical palette (distinguishable, colour-blind aware).
PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5", "#9c6b4e",
           "#9498a0")
WIDTH, HEIGHT = 960, 360
FONT = 'font-family="inherit"'
HALO = 'stroke="#ffffff" stroke-width="3" paint-order="stroke"'  # keeps labels readable over lines
INK, MUTED, GRID, REF = "#1f2328", "#59636e", "#e6e8eb", "#b42318"


@dataclass
class Series:
    """One line: `y[i]` at `x[i]`; None/NaN in `y` breaks the line."""

    name: str
    x: Sequence[Any]
    y: Sequence[float | None]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"series {self.name!r}: x has {len(self.x)} values, y has {len(self.y)}")


@dataclass
class LineChart:
    """Several series over a shared numeric, date or categorical x axis; optional reference lines."""

    title: str
    series: list[Series]
    x_label: str = ""
    y_label: str = ""
    hlines: list[tuple[float, str]] = field(default_factory=list)  # (y, label), e.g. a threshold
    vlines: list[tuple[Any, str]] = field(default_factory=list)  # (x, label), e.g. a drift onset
    y_zero: bool = False  # force 0 into the y range

    def __post_init__(self) -> None:
        if not self.series:
            raise ValueError(f"line chart {self.title!r}: no series")


@dataclass
class BarChart:
    """Grouped bars: `series[name][i]` is the value of `categories[i]`."""

    title: str
    categories: list[str]
    series: dict[str, list[float]]
    x_label: str = ""  # the category axis
    y_label: str = ""  # the value axis
    horizontal: bool | None = None  # None: horizontal when there are many or long category names
    hlines: list[tuple[float, str]] = field(default_factory=list)  # (value, label) reference lines
    value_max: float | None = None  # clip the value axis here; longer bars end in a zigzag, labels stay true

    def __post_init__(self) -> None:
        if not self.series:
            raise ValueError(f"bar chart {self.title!r}: no series")
        for name, vals in self.series.items():
            if len(vals) != len(self.categories):
                raise ValueError(f"bar chart {self.title!r}: series {name!r} has {len(vals)} values for "
                                 f"{len(self.categories)} categories")


@dataclass
class Histogram:
    """Counts over shared bin `edges` (len(edges) - 1 counts per series); several series are overlaid."""

    title: str
    edges: list[float]
    counts: dict[str, list[float]]
    x_label: str = ""
    y_label: str = "count"

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or not self.counts:
            raise ValueError(f"histogram {self.title!r}: need >= 2 edges and one series")
        for name, c in self.counts.items():
            if len(c) != len(self.edges) - 1:
                raise ValueError(f"histogram {self.title!r}: series {name!r} has {len(c)} counts for "
                                 f"{len(self.edges) - 1} bins")

    @classmethod
    def from_values(cls, title: str, values: dict[str, Sequence[float]] | Sequence[float], bins: int = 30,
                    x_label: str = "", density: bool = False) -> "Histogram":
        """Bin raw values (one array, or {name: array} sharing bins); `density` normalises each to shares."""
        named = values if isinstance(values, dict) else {"": values}
        arrays = {k: np.asarray(v, dtype=float) for k, v in named.items()}
        allv = np.concatenate([a[np.isfinite(a)] for a in arrays.values()] or [np.empty(0)])
        if allv.size == 0:
            allv = np.array([0.0, 1.0])
        edges = np.histogram_bin_edges(allv, bins=bins)
        counts = {}
        for k, a in arrays.items():
            c, _ = np.histogram(a[np.isfinite(a)], bins=edges)
            counts[k] = (c / max(c.sum(), 1)).tolist() if density else c.astype(float).tolist()
        return cls(title, edges.tolist(), counts, x_label, "share" if density else "count")


Chart = LineChart | BarChart | Histogram


# ------------------------------------------------------------------------------------------------ scales
def nice_ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], float]:
    """About `n` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 x 10^k) and the step."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    v = start
    while v < hi + step * 0.999:
        ticks.append(round(v, 12))
        v += step
    return ticks, step


class _Scale:
    def __init__(self, d0: float, d1: float, r0: float, r1: float) -> None:
        self.d0, self.d1, self.r0, self.r1 = d0, d1, r0, r1

    def __call__(self, v: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)


def _text(x: float, y: float, s: str, anchor: str = "middle", size: int = 12, fill: str = MUTED,
          weight: str = "normal", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" '
            f'font-weight="{weight}" {FONT} {extra}>{escape(s)}</text>')


def _header(title: str, names: Sequence[str], colors: Sequence[str], height: int) -> tuple[list[str], int]:
    """Title and legend; returns the SVG parts and the y where the plot may start."""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
             f'role="img" aria-label="{escape(title)}" class="chart" style="max-width:{WIDTH}px">',
             f"<title>{escape(title)}</title>", _text(8, 20, title, "start", 15, INK, "600")]
    y = 30
    shown = [(n, c) for n, c in zip(names, colors) if n]
    if shown:
        x = 8.0
        y = 44
        for name, color in shown:
            w = 22 + 7.0 * len(name) + 14
            if x + w > WIDTH - 8:
                x, y = 8.0, y + 18
            parts.append(f'<rect x="{x:.1f}" y="{y - 9}" width="14" height="10" rx="2" fill="{color}"/>')
            parts.append(_text(x + 19, y, name, "start", 12, INK))
            x += w
        y += 8
    return parts, y + 10


def _y_axis(parts: list[str], ys: _Scale, ticks: list[float], step: float, left: float, right: float,
            label: str, top: float, bottom: float) -> None:
    for t in ticks:
        py = ys(t)
        parts.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{py:.1f}" y2="{py:.1f}" stroke="{GRID}"/>')
        parts.append(_text(left - 6, py + 4, tick_label(t, step), "end", 11))
    if label:
        cy = (top + bottom) / 2
        parts.append(_text(14, cy, label, "middle", 12, INK, extra=f'transform="rotate(-90 14 {cy:.1f})"'))


def _left_margin(labels: Sequence[str], has_label: bool) -> float:
    return max(44.0, 10 + 6.6 * max((len(s) for s in labels), default=1)) + (22 if has_label else 4)


# ------------------------------------------------------------------------------------------------ x kinds
def _x_kind(values: Sequence[Any]) -> str:
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return "number"
    if all(isinstance(v, (date, datetime)) for v in values):
        return "time"
    return "category"


def _to_days(v: Any) -> float:
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        return v.timestamp() / 86400.0
    return float(v.toordinal() - date(1970, 1, 1).toordinal())


def _day_label(d: float, step: float) -> str:
    dt = datetime.fromtimestamp(d * 86400.0, tz=timezone.utc)
    return dt.strftime("%Y-%m-%d") if step >= 1 else dt.strftime("%m-%d %H:%M")


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))


# ------------------------------------------------------------------------------------------------ charts
def _line_svg(c: LineChart) -> str:
    xs_all = [x for s in c.series for x in s.x] + [v for v, _ in c.vlines]
    kind = _x_kind(xs_all) if xs_all else "number"
    cats: list[Any] = []
    if kind == "category":
        for x in xs_all:
            if x not in cats:
                cats.append(x)
    to_num = {"number": float, "time": _to_days, "category": lambda v: float(cats.index(v))}[kind]
    yvals = [float(y) for s in c.series for y in s.y if _finite(y)] + [v for v, _ in c.hlines]
    ylo, yhi = (min(yvals), max(yvals)) if yvals else (0.0, 1.0)
    if c.y_zero:
        ylo, yhi = min(ylo, 0.0), max(yhi, 0.0)
    yticks, ystep = nice_ticks(ylo, yhi)
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(c.series))]
    names = [s.name for s in c.series] if (len(c.series) > 1 or c.series[0].name) else []
    parts, top = _header(c.title, names, colors, HEIGHT)
    left = _left_margin([tick_label(t, ystep) for t in yticks], bool(c.y_label))
    right, bottom = WIDTH - 24, HEIGHT - (46 if c.x_label else 30)
    xnums = [to_num(x) for x in xs_all] or [0.0, 1.0]
    if kind == "category":
        xs = _Scale(-0.5, len(cats) - 0.5, left, right)
        every = max(1, math.ceil(len(cats) / 10))
        xticks = [(float(i), str(v)) for i, v in enumerate(cats) if i % every == 0]
    else:
        lo_x, hi_x = min(xnums), max(xnums)
        ticks, step = nice_ticks(lo_x, hi_x, 6)
        if kind == "time" and hi_x - lo_x >= 3:  # whole days
            step = max(1.0, float(round(step)))
            ticks = [math.ceil(lo_x) + i * step for i in range(int((hi_x - math.ceil(lo_x)) // step) + 1)]
        xs = _Scale(min(xnums), max(xnums), left, right)
        lab = (lambda t: _day_label(t, step)) if kind == "time" else (lambda t: tick_label(t, step))
        xticks = [(t, lab(t)) for t in ticks if min(xnums) - 1e-9 <= t <= max(xnums) + 1e-9]
    ys = _Scale(yticks[0], yticks[-1], bottom, top)
    _y_axis(parts, ys, yticks, ystep, left, right, c.y_label, top, bottom)
    for t, lab_ in xticks:
        px = xs(t)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{bottom:.1f}" y2="{bottom + 4:.1f}" stroke="{MUTED}"/>')
        anchor = "end" if px > right - 3.3 * len(lab_) else "middle"
        parts.append(_text(px + (4 if anchor == "end" else 0), bottom + 17, lab_, anchor, 11))
    parts.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{bottom:.1f}" y2="{bottom:.1f}" stroke="{MUTED}"/>')
    if c.x_label:
        parts.append(_text((left + right) / 2, HEIGHT - 8, c.x_label, "middle", 12, INK))
    for yv, label in c.hlines:
        py = ys(yv)
        parts.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{py:.1f}" y2="{py:.1f}" stroke="{REF}" '
                     f'stroke-dasharray="5 4" stroke-width="1.2"/>')
        parts.append(_text(right - 2, py - 4, label, "end", 11, REF, extra=HALO))
    for xv, label in c.vlines:
        px = xs(to_num(xv))
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" stroke="{INK}" '
                     f'stroke-dasharray="3 3"/>')
        parts.append(_text(px + 4, top + 10, label, "start", 11, INK, extra=HALO))
    for s, color in zip(c.series, colors):
        pts = sorted(((to_num(x), float(y) if _finite(y) else None) for x, y in zip(s.x, s.y)), key=lambda p: p[0])
        segs: list[list[tuple[float, float]]] = [[]]
        for x, y in pts:
            if y is None:
                segs.append([])
            else:
                segs[-1].append((xs(x), ys(y)))
        for seg in segs:
            if len(seg) > 1:
                d = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(seg))
                parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2" '
                             f'stroke-linejoin="round"><title>{escape(s.name)}</title></path>')
        if len(pts) <= 40:
            for x, y in pts:
                if y is not None:
                    parts.append(f'<circle cx="{xs(x):.1f}" cy="{ys(y):.1f}" r="3" fill="{color}">'
                                 f'<title>{escape(s.name)}: {format_number(y)}</title></circle>')
    parts.append("</svg>")
    return "\n".join(parts)


def _bar_svg(c: BarChart) -> str:
    names = list(c.series)
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
    cats = [str(x) if len(str(x)) <= 28 else str(x)[:27] + "…" for x in c.categories]
    n_bars = len(cats) * len(names)
    horizontal = c.horizontal if c.horizontal is not None else (len(cats) > 10 or max(map(len, cats or [""])) > 12)
    cap = c.value_max if c.value_max is not None else math.inf
    vals = [min(float(v), cap) for vs in c.series.values() for v in vs if _finite(v)] + [v for v, _ in c.hlines]
    lo, hi = min(vals + [0.0]), max(vals + [0.0])
    ticks, step = nice_ticks(lo, hi)
    band_px = 22 + 12 * (len(names) - 1)
    height = max(HEIGHT, 110 + len(cats) * band_px) if horizontal else HEIGHT
    parts, top = _header(c.title, names if len(names) > 1 or names[0] else [], colors, height)
    label_bars = n_bars <= 30
    if horizontal:
        left = 16 + 6.6 * max(map(len, cats or [""])) + (20 if c.x_label else 0)
        right, bottom = WIDTH - (70 if label_bars else 24), height - (46 if c.y_label else 30)
        vs_ = _Scale(ticks[0], ticks[-1], left, right)
        for t in ticks:
            px = vs_(t)
            parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" stroke="{GRID}"/>')
            parts.append(_text(px, bottom + 16, tick_label(t, step), "middle", 11))
        if c.y_label:
            parts.append(_text((left + right) / 2, height - 8, c.y_label, "middle", 12, INK))
        if c.x_label:
            cy = (top + bottom) / 2
            parts.append(_text(12, cy, c.x_label, "middle", 12, INK, extra=f'transform="rotate(-90 12 {cy:.1f})"'))
        band = (bottom - top) / max(len(cats), 1)
        bar = min(band * 0.8 / len(names), 28.0)
        pad = (band - bar * len(names)) / 2
        for v, label in c.hlines:
            px = vs_(v)
            parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top - 4:.1f}" y2="{bottom:.1f}" stroke="{REF}" '
                         f'stroke-dasharray="5 4" stroke-width="1.2"/>')
            parts.append(_text(px + 3, top - 6, label, "start", 11, REF, extra=HALO))
        for i, cat in enumerate(cats):
            parts.append(_text(left - 6, top + band * (i + 0.5) + 4, cat, "end", 11, INK))
            for j, (name, color) in enumerate(zip(names, colors)):
                v = c.series[name][i]
                if not _finite(v):
                    continue
                x0, x1 = sorted((vs_(0.0), vs_(min(float(v), cap))))
                y = top + band * i + pad + bar * j
                parts.append(f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 0.5):.1f}" height="{bar:.1f}" '
                             f'fill="{color}"><title>{escape(cat)} · {escape(name)}: '
                             f'{format_number(v)}</title></rect>')
                if float(v) > cap:
                    parts.append(f'<path d="M{x1 - 8:.1f},{y:.1f} l4,{bar / 2:.1f} l-4,{bar / 2:.1f}" fill="none" '
                                 f'stroke="#ffffff" stroke-width="2"/>')
                if label_bars:
                    parts.append(_text(x1 + 4, y + bar / 2 + 4, format_number(v), "start", 10, INK))
    else:
        left = _left_margin([tick_label(t, step) for t in ticks], bool(c.y_label))
        right, bottom = WIDTH - 24, height - (46 if c.x_label else 30)
        vs_ = _Scale(ticks[0], ticks[-1], bottom, top + (12 if label_bars else 0))
        _y_axis(parts, vs_, ticks, step, left, right, c.y_label, top, bottom)
        band = (right - left) / max(len(cats), 1)
        bar = min(band * 0.8 / len(names), 64.0)
        pad = (band - bar * len(names)) / 2
        for i, cat in enumerate(cats):
            parts.append(_text(left + band * (i + 0.5), bottom + 17, cat, "middle", 11, INK))
            for j, (name, color) in enumerate(zip(names, colors)):
                v = c.series[name][i]
                if not _finite(v):
                    continue
                y0, y1 = sorted((vs_(0.0), vs_(min(float(v), cap))))
                x = left + band * i + pad + bar * j
                parts.append(f'<rect x="{x:.1f}" y="{y0:.1f}" width="{bar:.1f}" height="{max(y1 - y0, 0.5):.1f}" '
                             f'fill="{color}"><title>{escape(cat)} · {escape(name)}: '
                             f'{format_number(v)}</title></rect>')
                if float(v) > cap:
                    parts.append(f'<path d="M{x:.1f},{y0 + 8:.1f} l{bar / 2:.1f},-4 l{bar / 2:.1f},4" fill="none" '
                                 f'stroke="#ffffff" stroke-width="2"/>')
                if label_bars:
                    parts.append(_text(x + bar / 2, y0 - 4, format_number(v), "middle", 10, INK))
        parts.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{vs_(0.0):.1f}" y2="{vs_(0.0):.1f}" '
                     f'stroke="{MUTED}"/>')
        for v, label in c.hlines:
            py = vs_(v)
            parts.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{py:.1f}" y2="{py:.1f}" stroke="{REF}" '
                         f'stroke-dasharray="5 4" stroke-width="1.2"/>')
            parts.append(_text(right - 2, py - 4, label, "end", 11, REF, extra=HALO))
        if c.x_label:
            parts.append(_text((left + right) / 2, height - 8, c.x_label, "middle", 12, INK))
    parts.append("</svg>")
    return "\n".join(parts)


def _hist_svg(c: Histogram) -> str:
    names = list(c.counts)
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
    edges = [float(e) for e in c.edges]
    vals = [float(v) for vs in c.counts.values() for v in vs if _finite(v)]
    yticks, ystep = nice_ticks(0.0, max(vals + [0.0]) or 1.0)
    parts, top = _header(c.title, names if len(names) > 1 or names[0] else [], colors, HEIGHT)
    left = _left_margin([tick_label(t, ystep) for t in yticks], bool(c.y_label))
    right, bottom = WIDTH - 24, HEIGHT - (46 if c.x_label else 30)
    ys = _Scale(yticks[0], yticks[-1], bottom, top)
    _y_axis(parts, ys, yticks, ystep, left, right, c.y_label, top, bottom)
    xticks, xstep = nice_ticks(edges[0], edges[-1], 7)
    xs = _Scale(edges[0], edges[-1], left, right)
    for t in xticks:
        if edges[0] - 1e-12 <= t <= edges[-1] + 1e-12:
            parts.append(_text(xs(t), bottom + 17, tick_label(t, xstep), "middle", 11))
    opacity = "1" if len(names) == 1 else "0.45"
    for name, color in zip(names, colors):
        for lo, hi, v in zip(edges[:-1], edges[1:], c.counts[name]):
            if not _finite(v) or v <= 0:
                continue
            x0, x1, y = xs(lo), xs(hi), ys(float(v))
            parts.append(f'<rect x="{x0 + 0.5:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" '
                         f'height="{bottom - y:.1f}" fill="{color}" fill-opacity="{opacity}" stroke="{color}">'
                         f'<title>{escape(name)} [{format_number(lo)}, {format_number(hi)}): '
                         f'{format_number(v)}</title></rect>')
    parts.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{bottom:.1f}" y2="{bottom:.1f}" stroke="{MUTED}"/>')
    if c.x_label:
        parts.append(_text((left + right) / 2, HEIGHT - 8, c.x_label, "middle", 12, INK))
    parts.append("</svg>")
    return "\n".join(parts)


def render_svg(chart: Chart) -> str:
    """The chart as one self-contained `<svg>` element."""
    if isinstance(chart, LineChart):
        return _line_svg(chart)
    if isinstance(chart, BarChart):
        return _bar_svg(chart)
    if isinstance(chart, Histogram):
        return _hist_svg(chart)
    raise TypeError(f"not a chart: {type(chart).__name__}")
