"""Charts as inline SVG, drawn on the server from the data (pure: no I/O).

Every bar carries its label and its number as text, so a chart reads without hovering and
without scripts; colours come from the stylesheet (classes), so the SVG needs no inline
style under the Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

BAR_WIDTH = 600
LABEL_WIDTH = 210
VALUE_WIDTH = 92
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
    width = 600
    plot = 150
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
