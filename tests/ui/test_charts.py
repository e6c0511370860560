"""The UI's charts: static SVG, no script (the CSP would refuse it), labelled for readers."""

from __future__ import annotations

import pygal

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
