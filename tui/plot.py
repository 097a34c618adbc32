"""Line charts in the terminal: braille dots, a y axis with labelled ticks, an x axis, a legend.

`render_plot` is a pure function (series and a size in, Rich Text lines out) so it is unit-tested
without an app; `Plot` is the widget that calls it with its own size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

PALETTE = ("cyan", "dark_orange", "green", "magenta", "yellow", "bright_blue")
BRAILLE = 0x2800
# Braille dot bits by (column in the cell, row in the cell).
DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[float, float], ...]
    color: str = ""


def number(value: float) -> str:
    """Short tick text: 3 significant digits, no trailing zeros, k/M for large values."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:.3g}"


def _span(low: float, high: float, pad: float) -> tuple[float, float]:
    if high > low:
        return low, high
    delta = abs(low) * 0.1 or pad
    return low - delta, high + delta


def _line(x0: int, y0: int, x1: int, y1: int):
    """Dots of a straight segment (Bresenham)."""
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        yield x0, y0
        if x0 == x1 and y0 == y1:
            return
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def _legend(series: Sequence[Series], colors: list[str], y_label: str, width: int) -> Text:
    """`y_label  ━ a  ━ b`; names are shortened evenly (with …) when they do not all fit."""
    names = [s.name for s in series]
    budget = (width - len(y_label) - 4 * len(names)) // max(len(names), 1)
    if sum(len(n) + 4 for n in names) + len(y_label) > width and budget >= 2:
        names = [n if len(n) <= budget else n[:budget - 1] + "…" for n in names]
    line = Text(y_label, style="dim")
    for name, color in zip(names, colors):
        line.append("  " if len(line) else "")
        line.append("━ ", style=f"bold {color}")
        line.append(name)
    line.truncate(width)
    return line


def render_plot(series: Sequence[Series], width: int, height: int, *, x_label: str = "", y_label: str = "",
                y_format: Callable[[float], str] = number, x_format: Callable[[float], str] = number,
                y_min: float | None = None, y_max: float | None = None) -> list[Text]:
    """`height` lines of `width` cells: legend, plot rows with the y axis, the x axis, x tick labels."""
    width, height = max(width, 1), max(height, 1)
    colors = [s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(series)]
    lines = [_legend(series, colors, y_label, width)]
    series = [Series(s.name, tuple(p for p in s.points if math.isfinite(p[0]) and math.isfinite(p[1])), s.color)
              for s in series]  # a NaN or an infinity has no place on an axis
    points = [p for s in series for p in s.points]
    rows = height - 3
    if not points or rows < 1 or width < 12:
        message = Text("no data yet" if not points else "(too small)", style="dim")
        lines.extend([Text(), message.copy()] + [Text() for _ in range(height - 3)])
        return lines[:height]

    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    x1 = x1 if x1 > x0 else x0 + 1  # one x value: it sits on the y axis
    y0, y1 = _span(min(p[1] for p in points) if y_min is None else y_min,
                   max(p[1] for p in points) if y_max is None else y_max, 1.0)
    tick_rows = {0: y1, rows - 1: y0}
    if rows >= 5:
        middle = rows // 2
        tick_rows[middle] = y1 - (middle * 4 + 1.5) / (rows * 4 - 1) * (y1 - y0)
    labels = {row: y_format(value) for row, value in tick_rows.items()}
    label_width = max(len(t) for t in labels.values())
    columns = width - label_width - 1
    dots_w, dots_h = columns * 2, rows * 4

    cells = [[0] * columns for _ in range(rows)]
    owner = [[-1] * columns for _ in range(rows)]

    def to_dot(x: float, y: float) -> tuple[int, int]:
        col = round((x - x0) / (x1 - x0) * (dots_w - 1))
        row = round((y1 - y) / (y1 - y0) * (dots_h - 1))
        return min(max(col, 0), dots_w - 1), min(max(row, 0), dots_h - 1)

    for index, s in enumerate(series):
        dots = [to_dot(x, y) for x, y in sorted(s.points)]
        segments = zip(dots, dots[1:]) if len(dots) > 1 else [(dots[0], dots[0])] if dots else []
        for (ax, ay), (bx, by) in segments:
            for dx, dy in _line(ax, ay, bx, by):
                cells[dy // 4][dx // 2] |= DOTS[dx % 2][dy % 4]
                owner[dy // 4][dx // 2] = index

    for row in range(rows):
        line = Text(labels.get(row, "").rjust(label_width), style="dim")
        line.append("┤" if row in labels else "│", style="dim")
        for col in range(columns):
            bits = cells[row][col]
            line.append(chr(BRAILLE + bits) if bits else " ", style=colors[owner[row][col]] if bits else "")
        lines.append(line)

    x_ticks = {0: x0, columns - 1: x1}
    integers = all(float(x).is_integer() for x, _ in points)
    if columns >= 24 and (x1 - x0 >= 2 or not integers):
        middle = float(round((x0 + x1) / 2)) if integers else (x0 + x1) / 2  # epochs get integer ticks
        x_ticks[to_dot(middle, y0)[0] // 2] = middle
    axis = "".join("┬" if col in x_ticks else "─" for col in range(columns))
    lines.append(Text(" " * label_width + "└" + axis, style="dim"))
    lines.append(_x_labels(x_ticks, x_format, x_label, label_width + 1, columns))
    return lines


def _x_labels(ticks: dict[int, float], fmt: Callable[[float], str], x_label: str, indent: int, columns: int) -> Text:
    row = " " * columns

    def place(text: str, start: int) -> bool:
        nonlocal row
        start = max(0, min(start, columns - len(text)))
        if len(text) > columns or row[max(0, start - 1):start + len(text) + 1].strip():
            return False
        row = row[:start] + text + row[start + len(text):]
        return True

    last = max(ticks)
    for col, value in sorted(ticks.items()):
        text = fmt(value)
        place(text, 0 if col == 0 else columns - len(text) if col == last else col - len(text) // 2)
    if x_label and not place(x_label, (columns - len(x_label)) // 2):
        place(x_label, len(fmt(ticks[0])) + 2)
    return Text(" " * indent + row, style="dim")


class Plot(Widget):
    """A line chart sized by its container; feed it with `set_series`."""

    DEFAULT_CSS = """
    Plot { width: 1fr; height: 1fr; min-height: 6; }
    """

    def __init__(self, *, x_label: str = "", y_label: str = "", y_format: Callable[[float], str] = number,
                 x_format: Callable[[float], str] = number, y_min: float | None = None, title: str = "",
                 id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.x_label, self.y_label, self.y_min = x_label, y_label, y_min
        self.y_format, self.x_format = y_format, x_format
        self.series: tuple[Series, ...] = ()
        if title:
            self.border_title = title

    def set_series(self, series: Sequence[Series]) -> None:
        series = tuple(series)
        if series != self.series:
            self.series = series
            self.refresh()

    def render(self) -> Text:
        size = self.content_size
        lines = render_plot(self.series, size.width, size.height, x_label=self.x_label, y_label=self.y_label,
                            y_format=self.y_format, x_format=self.x_format, y_min=self.y_min)
        return Text("\n").join(lines)
