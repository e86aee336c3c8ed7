"""Small inline-SVG charts for the HTML reports: lines, grouped bars, histograms.

The report must open from a file in any browser, offline, as one file: no matplotlib (not a
dependency), no JavaScript library from a CDN. A chart here is a function from numbers to an
``<svg>`` string with axes, "nice" ticks, a legend and a ``<title>`` tooltip on every point or
bar; colours come from one fixed palette so a series keeps its colour across charts.

Layout of every chart (pixels)::

    +--------------------------------------------+  ^
    | title                                      |  | TOP
    |      +-------------------------------+     |  v
    | ytick|  plot area                    | leg |
    |      +-------------------------------+     |
    |        xticks / x label                    |  BOTTOM
    +--------------------------------------------+
     <LEFT>                                 <RIGHT>

Example:
    >>> svg = line_chart([("p50", [1, 2, 4], [10.0, 12.0, 30.0])], "TTFT", "concurrency", "ms")
    >>> svg.startswith("<svg")
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["PALETTE", "bar_chart", "histogram", "line_chart", "nice_ticks"]

PALETTE = (
    "#4269d0",
    "#efb118",
    "#ff725c",
    "#6cc5b0",
    "#3ca951",
    "#ff8ab7",
    "#a463f2",
    "#97bbf5",
    "#9c6b4e",
    "#9498a0",
)
WIDTH, HEIGHT = 680, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 130, 34, 46


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    ticks = [round(math.floor(lo / step) * step, 12)]
    while ticks[-1] < hi - 1e-12 or len(ticks) < 2:  # the last tick covers hi
        ticks.append(round(ticks[0] + len(ticks) * step, 12))
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10000:
        return f"{v / 1000:.0f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _frame(title: str, x_label: str, y_label: str, yt: list[float], sy) -> list[str]:
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    x0, x1 = LEFT, WIDTH - RIGHT
    for t in yt:
        y = sy(t)
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(
        f'<line x1="{x0}" x2="{x1}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}" stroke="#777"/>'
    )
    out.append(
        f'<text x="{(x0 + x1) / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>'
    )
    ymid = (TOP + HEIGHT - BOTTOM) / 2
    out.append(
        f'<text transform="translate(14 {ymid}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    return out


def _legend(names: Sequence[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        y = TOP + 6 + 16 * i
        x = WIDTH - RIGHT + 12
        out.append(
            f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
        )
        out.append(f'<text x="{x + 14}" y="{y + 1}">{escape(name[:18])}</text>')
    return out


def _empty(title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} 60" width="{WIDTH}" '
        f'height="60" font-family="sans-serif" font-size="12"><text x="10" y="20" '
        f'font-weight="bold">{escape(title)}</text><text x="10" y="42">no data</text></svg>'
    )


def line_chart(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    markers: bool = True,
) -> str:
    """Lines through ``(x, y)`` points, one per ``(name, xs, ys)``; NaN points are skipped.
    ``log_x`` suits doubling ramps (1, 2, 4, ...)."""
    pts = [
        (x, y)
        for _, xs, ys in series
        for x, y in zip(xs, ys, strict=False)
        if y is not None and math.isfinite(y) and (x > 0 or not log_x)
    ]
    if not pts:
        return _empty(title)
    tx = (lambda v: math.log2(v)) if log_x else (lambda v: v)
    xlo, xhi = min(tx(p[0]) for p in pts), max(tx(p[0]) for p in pts)
    if xhi == xlo:
        xlo, xhi = xlo - 1, xhi + 1
    yt = nice_ticks(min(0.0, min(p[1] for p in pts)), max(p[1] for p in pts))
    ylo, yhi = yt[0], yt[-1]
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP

    def sx(v: float) -> float:
        return x0 + (tx(v) - xlo) / (xhi - xlo) * (x1 - x0)

    def sy(v: float) -> float:
        return y0 - (v - ylo) / ((yhi - ylo) or 1) * (y0 - y1)

    out = _frame(title, x_label, y_label, yt, sy)
    xs_all = sorted({p[0] for p in pts})
    if len(xs_all) <= 12:
        xticks = xs_all
    else:
        xticks = [2**k for k in range(int(xlo), int(xhi) + 1)] if log_x else nice_ticks(xlo, xhi)
    for t in xticks:
        if (tx(t) if log_x else t) < xlo - 1e-9 or (tx(t) if log_x else t) > xhi + 1e-9:
            continue
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{y0 + 4}" stroke="#777"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for i, (name, xs, ys) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        good = [
            (x, y)
            for x, y in zip(xs, ys, strict=False)
            if y is not None and math.isfinite(y) and (x > 0 or not log_x)
        ]
        if not good:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        if markers and len(good) <= 60:
            for x, y in good:
                out.append(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
                    f"<title>{escape(name)}: x={_fmt(x)} y={y:.4g}</title></circle>"
                )
    out += _legend([s[0] for s in series])
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    title: str,
    y_label: str,
    x_label: str = "",
) -> str:
    """Grouped bars: for each category, one bar per ``(name, values)`` series."""
    vals = [v for _, vs in series for v in vs if v is not None and math.isfinite(v)]
    if not categories or not vals:
        return _empty(title)
    yt = nice_ticks(min(0.0, min(vals)), max(vals))
    ylo, yhi = yt[0], yt[-1]
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP

    def sy(v: float) -> float:
        return y0 - (v - ylo) / ((yhi - ylo) or 1) * (y0 - y1)

    out = _frame(title, x_label, y_label, yt, sy)
    group = (x1 - x0) / len(categories)
    bw = group * 0.8 / max(len(series), 1)
    for ci, cat in enumerate(categories):
        gx = x0 + ci * group + group * 0.1
        for si, (name, vs) in enumerate(series):
            v = vs[ci] if ci < len(vs) else None
            if v is None or not math.isfinite(v):
                continue
            top, base = sy(max(v, 0.0)), sy(min(v, 0.0))
            out.append(
                f'<rect x="{gx + si * bw:.1f}" y="{top:.1f}" width="{max(bw - 1, 1):.1f}" '
                f'height="{max(base - top, 0.5):.1f}" fill="{PALETTE[si % len(PALETTE)]}">'
                f"<title>{escape(name)} / {escape(cat)}: {v:.4g}</title></rect>"
            )
        if len(categories) <= 16 or ci % max(1, len(categories) // 12) == 0:
            out.append(
                f'<text x="{gx + group * 0.4:.1f}" y="{y0 + 16}" text-anchor="middle">'
                f"{escape(str(cat)[:14])}</text>"
            )
    if len(series) > 1 or series[0][0]:
        out += _legend([s[0] for s in series])
    out.append("</svg>")
    return "\n".join(out)


def histogram(
    named_values: Sequence[tuple[str, Sequence[float]]],
    title: str,
    x_label: str,
    bins: int = 40,
) -> str:
    """Share of values per bin (one series per name, shared bins), as lines over bin
    centres; the top 0.5 % is clipped so one outlier does not squash the shape."""
    allv = sorted(v for _, vs in named_values for v in vs if math.isfinite(v))
    if not allv:
        return _empty(title)
    lo = allv[0]
    hi = allv[min(len(allv) - 1, int(len(allv) * 0.995))]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    width = (hi - lo) / bins
    series = []
    for name, vs in named_values:
        counts = [0] * bins
        n = 0
        for v in vs:
            if not math.isfinite(v):
                continue
            n += 1
            counts[min(bins - 1, max(0, int((v - lo) / width)))] += 1
        centres = [lo + (i + 0.5) * width for i in range(bins)]
        series.append((name, centres, [100.0 * c / n if n else math.nan for c in counts]))
    return line_chart(series, title, x_label, "% of values", markers=False)
