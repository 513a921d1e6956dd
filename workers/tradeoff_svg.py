"""The report's time-quality plot as inline SVG, for the runs page (no image file, no matplotlib).

The same picture as ``workers.evaluation.plot.plot_tradeoff`` draws for ``peerblend report``:
one labelled marker per method at its mean over datasets, each dataset's cell faint
beside it; x is seconds per question (logarithmic when the values span more than 10x),
y is token F1 x 100.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

from pipeline.evaluation.report import Point
from pipeline.evaluation.stats import ALL, Cell
from pipeline.evaluation.tables import F1, SECONDS

WIDTH, HEIGHT = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 56, 24, 16, 44  # margins for the axes' ticks and names
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def points_of(cells: Mapping[str, Mapping[tuple[str, str], Cell]], order: Sequence[str]) -> list[Point]:
    """Every (method, dataset) cell with both a quality and a time, ALL included (a CSV report's points)."""
    quality, seconds = cells.get(F1, {}), cells.get(SECONDS, {})
    return [
        Point(label, dataset, seconds[(label, dataset)].value, quality[(label, dataset)].value)
        for label in order
        for (name, dataset) in quality
        if name == label and (label, dataset) in seconds
    ]


def tradeoff_svg(points: Sequence[Point]) -> str | None:
    """The plot as an ``<svg>`` element (None without a point); labels are escaped."""
    if not points:
        return None
    x, log = _x_scale([p.seconds for p in points])
    y = _y_scale([p.f1x100 for p in points])
    labels = list(dict.fromkeys(p.label for p in points))
    color = {label: COLORS[i % len(COLORS)] for i, label in enumerate(labels)}
    parts = [
        f'<svg class="tradeoff" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-label="time per question against token F1, one marker per method">',
        *_axes(x, y, log, [p.seconds for p in points], [p.f1x100 for p in points]),
    ]
    for p in (p for p in points if p.dataset != ALL):
        parts.append(
            f'<rect x="{x(p.seconds) - 3:.1f}" y="{y(p.f1x100) - 3:.1f}" width="6" height="6" '
            f'fill="{color[p.label]}" opacity="0.35"><title>{escape(p.label)}, {escape(p.dataset)}: '
            f"{p.f1x100:.1f} F1, {p.seconds:.2f} s</title></rect>"
        )
    for p in (p for p in points if p.dataset == ALL):
        cx, cy = x(p.seconds), y(p.f1x100)
        parts.append(
            f'<circle class="method" cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{color[p.label]}" stroke="#222">'
            f"<title>{escape(p.label)}: {p.f1x100:.1f} F1, {p.seconds:.2f} s per question</title></circle>"
            + _label(cx, cy, p.label)
        )
    return "\n".join([*parts, "</svg>"])


def _label(cx: float, cy: float, label: str) -> str:
    """A marker's name beside it: to its left in the right third, where it would leave the frame."""
    if cx > LEFT + 2 * (WIDTH - LEFT - RIGHT) / 3:
        return (
            f'<text x="{cx - 8:.1f}" y="{cy - 8:.1f}" class="name" text-anchor="end">{escape(label)}</text>'
        )
    return f'<text x="{cx + 8:.1f}" y="{cy - 8:.1f}" class="name">{escape(label)}</text>'


def _x_scale(values: Sequence[float]) -> tuple[Callable[[float], float], bool]:
    positive = [v for v in values if v > 0] or [1.0]
    log = max(positive) > 10 * min(positive)
    if log:
        low, high = math.log10(min(positive)) - 0.1, math.log10(max(positive)) + 0.1
        return lambda v: _map(math.log10(max(v, min(positive))), low, high, LEFT, WIDTH - RIGHT), True
    low, high = 0.0, max(values) * 1.1 or 1.0
    return lambda v: _map(v, low, high, LEFT, WIDTH - RIGHT), False


def _y_scale(values: Sequence[float]) -> Callable[[float], float]:
    low, high = min(0.0, min(values)), max(values) * 1.1 or 1.0
    return lambda v: _map(v, low, high, HEIGHT - BOTTOM, TOP)


def _map(v: float, low: float, high: float, start: float, end: float) -> float:
    return start + (v - low) / ((high - low) or 1.0) * (end - start)


def _axes(
    x: Callable[[float], float],
    y: Callable[[float], float],
    log: bool,
    xs: Sequence[float],
    ys: Sequence[float],
) -> list[str]:
    """The frame, five ticks on each axis (powers of ten on a log axis), and the axes' names."""
    parts = [
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" class="frame"/>'
    ]
    for value in _y_ticks(ys):
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" class="tick" text-anchor="end">{value:g}</text>'
        )
    for value in _x_ticks(xs, log):
        parts.append(
            f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" class="grid"/>'
            f'<text x="{x(value):.1f}" y="{HEIGHT - BOTTOM + 16}" class="tick" text-anchor="middle">{value:g}</text>'
        )
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" class="axis" text-anchor="middle">'
        f"seconds per question{' (log scale)' if log else ''}</text>"
        f'<text x="14" y="{(TOP + HEIGHT - BOTTOM) / 2}" class="axis" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + HEIGHT - BOTTOM) / 2})">token F1 × 100</text>'
    )
    return parts


def _y_ticks(values: Sequence[float]) -> list[float]:
    high = max(values) * 1.1 or 1.0
    step = _nice(high / 5)
    return [step * i for i in range(int(high / step) + 1)]


def _x_ticks(values: Sequence[float], log: bool) -> list[float]:
    positive = [v for v in values if v > 0] or [1.0]
    if log:
        first, last = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
        ticks = [10.0**e for e in range(first, last + 1)]
        return [t for t in ticks if min(positive) / 1.3 <= t <= max(positive) * 1.3]
    return _y_ticks(values)


def _nice(raw: float) -> float:
    """The round step (1, 2 or 5 times a power of ten) at or above ``raw``."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
