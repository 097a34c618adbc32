"""The dashboard's braille line charts: axes, ticks, legend, edge cases (no app needed)."""

from __future__ import annotations

import pytest

pytest.importorskip("textual")

from oaecmlr_tui.plot import BRAILLE, Series, number, render_plot  # noqa: E402


def plain(series, width=50, height=10, **options) -> list[str]:
    return [line.plain for line in render_plot(series, width, height, **options)]


MAP = Series("mAP", ((0, 10.0), (2, 20.0), (4, 35.0), (6, 30.0)))
R1 = Series("R1", ((0, 20.0), (2, 30.0), (4, 45.0), (6, 50.0)))


def test_size_is_exactly_width_by_height():
    lines = plain([MAP, R1], 50, 10, x_label="epoch")
    assert len(lines) == 10
    assert all(len(line) <= 50 for line in lines)
    assert max(len(line) for line in lines) == 50


def test_legend_names_each_series_with_the_y_label_first():
    legend = plain([MAP, R1], y_label="%")[0]
    assert legend.startswith("%")
    assert "━ mAP" in legend and "━ R1" in legend
    assert legend.index("mAP") < legend.index("R1")


def test_long_legend_names_are_shortened_evenly():
    series = [Series(name, ((0, 1.0), (1, 2.0))) for name in ("baseline-market", "no-oae-market", "lam0-market")]
    legend = plain(series, 40, 8, y_label="%")[0]
    assert len(legend) <= 40 and legend.count("━") == 3 and legend.count("…") >= 2
    assert "━ base" in legend and "━ no-o" in legend and "━ lam0" in legend


def test_y_axis_has_max_at_top_and_min_at_bottom():
    lines = plain([MAP, R1], 50, 10)
    rows = lines[1:-2]
    assert rows[0].startswith("50┤")
    assert rows[-1].startswith("10┤")
    assert sum("┤" in row for row in rows) == 3  # max, middle, min
    assert all(row[2] in "┤│" for row in rows)  # the axis is one straight column


def test_x_axis_has_ticks_min_max_and_its_label():
    lines = plain([MAP, R1], 50, 10, x_label="epoch")
    axis, labels = lines[-2], lines[-1]
    assert axis.lstrip().startswith("└┬") and axis.endswith("┬")
    assert labels.split()[0] == "0" and labels.split()[-1] == "6"
    assert "epoch" in labels
    assert "3" in labels.split()  # integer x gets an integer middle tick


def test_fixed_y_min_and_custom_format():
    lines = plain([Series("n", ((1, 5.0), (2, 9.0)))], 40, 8, y_min=0, y_format=lambda v: f"{v:.1f}")
    rows = lines[1:-2]
    assert rows[-1].startswith("0.0┤") and rows[0].startswith("9.0┤")


def test_curve_is_drawn_in_braille_with_each_series_colour():
    lines = render_plot([MAP, R1], 50, 10)
    dots = [c for line in lines[1:-2] for c in line.plain if BRAILLE < ord(c) <= BRAILLE + 0xFF]
    assert len(dots) > 40
    styles = {str(span.style) for line in lines[1:-2] for span in line.spans}
    assert {"cyan", "dark_orange"} <= styles


def test_rising_series_starts_low_left_and_ends_high_right():
    lines = plain([Series("up", tuple((x, float(x)) for x in range(10)))], 40, 10)
    rows = lines[1:-2]
    first_col = rows[-1].index("┤") + 1
    assert rows[-1][first_col] != " "  # drawn at the bottom left
    assert rows[0][first_col] == " " and rows[0][-1] != " "  # and at the top right, not the top left


def test_empty_and_degenerate_inputs():
    assert "no data yet" in "\n".join(plain([], 40, 6))
    assert "no data yet" in "\n".join(plain([Series("a", ())], 40, 6))
    single = plain([Series("a", ((3, 0.5),))], 30, 6)
    assert any(BRAILLE < ord(c) <= BRAILLE + 0xFF for line in single for c in line)
    assert plain([Series("a", ((3, 0.5),))], 30, 6)[-1].split() == ["3", "4"]  # one epoch: no fractional ticks
    assert plain([Series("a", ((0, 0.5), (1, 0.7)))], 30, 6)[-1].split() == ["0", "1"]
    flat = plain([Series("a", ((0, 1.0), (5, 1.0)))], 30, 6)
    assert len(flat) == 6
    assert len(plain([MAP], 8, 3)) == 3  # too small: no crash, still the requested height


@pytest.mark.parametrize("value, text", [(0.5, "0.5"), (35.0, "35"), (4.95, "4.95"), (12345.0, "12.3k"),
                                         (2.5e6, "2.5M"), (0.00035, "0.00035")])
def test_number_format(value, text):
    assert number(value) == text
