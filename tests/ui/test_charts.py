"""The UI's charts: static SVG, no script (the CSP would refuse it), labelled for readers."""

from __future__ import annotations

import re

import pygal
import pytest

from dmp.ui import charts


def test_a_chart_is_labelled_svg_without_script() -> None:
    """pygal's inline config script and CDN tooltips are left out; the figure has a label."""
    chart = charts.make(pygal.Bar)
    chart.x_labels = ["Mo", "Di"]
    chart.add("Web", [3, 5])
    html = str(charts.render(chart, 'Touchpoints "per" day'))
    assert "<script" not in html and "kozea.github.io" not in html.split("-->")[-1]
    assert html.startswith('<figure class="chart" role="img" aria-label="Touchpoints &#34;per')
    assert "<svg" in html and "Web" in html


def test_a_pyramid_is_centred_bars_with_the_first_label_at_the_bottom() -> None:
    """Each step is a transparent spacer and a bar centred on the widest; a zero draws no
    bar, a tiny value a thin one; top_down turns it into a funnel."""
    html = str(charts.pyramid(["unknown", "low", "high"], [100, 0, 1], "Pyramid"))
    rects = re.findall(r"<rect [^>]*tooltip-trigger[^>]*>", html)[-3:]  # after the spacers
    x = [float(re.search(r' x="([0-9.]+)"', r).group(1)) for r in rects]
    width = [float(m.group(1)) if (m := re.search(r'width="([0-9.]+)"', r)) else 0.0 for r in rects]
    assert width[1] == 0.0 and width[2] == pytest.approx(width[0] * charts.MIN_SHARE)
    assert x[2] - x[0] == pytest.approx((width[0] - width[2]) / 2)  # centred on the widest
    labels = [m for m in ("unknown", "low", "high") if f">{m}<" in html]
    assert labels == ["unknown", "low", "high"]
    funnel = str(charts.pyramid(["Lead", "Won"], [10, 5], "Funnel", top_down=True))
    assert funnel.index(">Won<") < funnel.index(">Lead<")  # pygal draws the bottom first


def test_a_daily_stack_formats_its_axis_with_the_formatter() -> None:
    """The day chart writes its axis numbers with the given formatter (German: 1.000)."""
    html = str(
        charts.daily_stack(
            ["1. Nov.", "2. Nov."],
            [("web", [1000, 3000])],
            "Days",
            lambda v: f"{v:,.0f}".replace(",", "."),
        )
    )
    assert ">3.000<" in html and ">web<" in html


def test_a_cached_chart_is_drawn_once() -> None:
    """The same key gives the same drawing without drawing again."""
    drawn = []

    def draw():
        drawn.append(1)
        return charts.render(charts.make(pygal.Bar), "x")

    key = ("test", object())
    assert charts.cached(key, draw) is charts.cached(key, draw)
    assert drawn == [1]
