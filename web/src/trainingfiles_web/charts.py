"""Charts as inline SVG, drawn on the server from the data (pure: no I/O).

Every bar carries its label and its number as text, so a chart reads without hovering and
without scripts; colours come from the stylesheet (classes), so the SVG needs no inline
style under the Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

BAR_WIDTH = 480
LABEL_WIDTH = 190
VALUE_WIDTH = 84
ROW_HEIGHT = 24
MAX_LABEL_CHARS = 30


@dataclass(frozen=True)
class Bar:
    label: str
    count: int


def _short(label: str) -> str:
    label = label or "(none)"
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def bar_chart(title: str, bars: Sequence[Bar], *, unit: str = "") -> Markup:
    """Horizontal bars, largest first as given: label, bar, count and share of the total."""
    total = sum(bar.count for bar in bars)
    largest = max((bar.count for bar in bars), default=0)
    height = max(len(bars), 1) * ROW_HEIGHT + 8
    track = BAR_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    parts = [
        f'<svg class="chart bar-chart" role="img" viewBox="0 0 {BAR_WIDTH} {height}" '
        f'width="{BAR_WIDTH}" height="{height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    if not bars:
        parts.append('<text class="chart-empty" x="0" y="18">no data</text>')
    for row, bar in enumerate(bars):
        y = row * ROW_HEIGHT + 4
        width = 0.0 if largest == 0 else track * bar.count / largest
        share = 0.0 if total == 0 else 100 * bar.count / total
        parts.append(
            f'<g class="bar" data-label="{escape(bar.label)}" data-count="{bar.count}">'
            f"<title>{escape(bar.label or '(none)')}: {bar.count}{escape(unit)}</title>"
            f'<text class="bar-label" x="{LABEL_WIDTH - 8}" y="{y + 15}" '
            f'text-anchor="end">{escape(_short(bar.label))}</text>'
            f'<rect class="bar-fill" x="{LABEL_WIDTH}" y="{y + 3}" '
            f'width="{max(width, 1.5):.1f}" height="{ROW_HEIGHT - 8}" rx="2"></rect>'
            f'<text class="bar-value" x="{LABEL_WIDTH + width + 6:.1f}" y="{y + 15}">'
            f"{bar.count:,} ({share:.0f}%)</text>"
            "</g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Column:
    label: str
    count: int


def column_chart(title: str, columns: Sequence[Column]) -> Markup:
    """Vertical columns (a histogram): the count above each, its label below."""
    width = 480
    plot = 140
    top = 22
    height = top + plot + 30
    slot = width / max(len(columns), 1)
    largest = max((column.count for column in columns), default=0)
    parts = [
        f'<svg class="chart column-chart" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="0" x2="{width}" y1="{top + plot}" y2="{top + plot}"></line>',
    ]
    if not columns:
        parts.append('<text class="chart-empty" x="0" y="18">no data</text>')
    for index, column in enumerate(columns):
        bar_height = 0.0 if largest == 0 else plot * column.count / largest
        x = index * slot
        center = x + slot / 2
        parts.append(
            f'<g class="column" data-label="{escape(column.label)}" data-count="{column.count}">'
            f'<rect class="bar-fill" x="{x + slot * 0.15:.1f}" '
            f'y="{top + plot - bar_height:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{bar_height:.1f}" rx="2"></rect>'
            f'<text class="bar-value" x="{center:.1f}" y="{top + plot - bar_height - 5:.1f}" '
            f'text-anchor="middle">{column.count:,}</text>'
            f'<text class="bar-label" x="{center:.1f}" y="{top + plot + 18}" '
            f'text-anchor="middle">{escape(column.label)}</text>'
            "</g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def quality_range(low: float, mean: float, high: float, *, top: float = 5.0) -> Markup:
    """The quality summary on its 0–`top` scale: the range from lowest to highest score,
    and the mean marked, each with its number."""
    width, left, right = 480, 20, 20
    track = width - left - right

    def x(value: float) -> float:
        return left + track * min(max(value, 0.0), top) / top

    ticks = "".join(
        f'<text class="bar-label" x="{x(t):.1f}" y="66" text-anchor="middle">{t:g}</text>'
        for t in range(int(top) + 1)
    )
    return Markup(
        f'<svg class="chart quality-range" role="img" viewBox="0 0 {width} 74" width="{width}" '
        f'height="74" aria-label="Quality scores: lowest {low:.2f}, mean {mean:.2f}, '
        f'highest {high:.2f}"><title>Quality scores</title>'
        f'<rect class="track" x="{left}" y="30" width="{track}" height="10" rx="5"></rect>'
        f'<rect class="bar-fill" x="{x(low):.1f}" y="30" width="{max(x(high) - x(low), 2):.1f}" '
        f'height="10" rx="5"></rect>'
        f'<line class="mean" x1="{x(mean):.1f}" x2="{x(mean):.1f}" y1="24" y2="46"></line>'
        f'<text class="bar-value" x="{x(low):.1f}" y="20" text-anchor="middle">'
        f"{low:.1f}</text>"
        f'<text class="bar-value mean-value" x="{x(mean):.1f}" y="20" text-anchor="middle">'
        f"mean {mean:.2f}</text>"
        f'<text class="bar-value" x="{x(high):.1f}" y="20" text-anchor="middle">'
        f"{high:.1f}</text>{ticks}</svg>"
    )
