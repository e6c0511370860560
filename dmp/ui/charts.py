"""The UI's charts: pygal drawn on the server as inline SVG, in the UI's colours.

Every chart is static SVG (pygal's tooltip script, which it would load from a CDN, is
left out: the CSP allows only dmp's own scripts), and is labelled for screen readers;
pages show the numbers beside or under it as well, for reading and for clicking.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import pygal
from markupsafe import Markup, escape
from pygal.style import Style

COLOURS = ("#1f5f8b", "#5fa8d3", "#e07a1f", "#1e7b45", "#8e5ba8", "#b3261e", "#6c7a8a")
STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#1d2733",
    foreground_strong="#1d2733",
    foreground_subtle="#5b6776",
    opacity=".9",
    opacity_hover="1",
    colors=COLOURS,
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif",
    label_font_size=12,
    major_label_font_size=12,
    legend_font_size=12,
    value_font_size=12,
    title_font_size=14,
)
# pygal always writes an inline script of its config into the SVG; the CSP would refuse it
# (a console error on every page), and nothing needs it.
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL)
BASE: dict[str, Any] = {
    "style": STYLE,
    "js": [],  # no script: pygal's tooltips would come from a CDN
    "disable_xml_declaration": True,
    "explicit_size": False,  # scales with its box (.chart svg { width: 100% })
    "width": 640,
    "height": 300,
    "margin": 8,
    "legend_at_bottom": True,
    "legend_box_size": 10,
    "print_values": False,
    "show_y_guides": True,
    "show_x_guides": False,
    "truncate_label": -1,
    "truncate_legend": -1,
    "no_data_text": "",
}


def make(kind: type[pygal.graph.graph.Graph], **options: Any) -> Any:
    """Return a pygal chart of ``kind`` (``pygal.Bar``, ``pygal.Line`` …) in the UI's style."""
    return kind(**{**BASE, **options})


def render(chart: Any, label: str) -> Markup:
    """Return ``chart`` as inline SVG in a figure labelled ``label`` for screen readers."""
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    return Markup(f'<figure class="chart" role="img" aria-label="{escape(label)}">{svg}</figure>')


# Light to dark: the wide base of a pyramid or funnel is the lightest, its tip the darkest.
STEPS = ("#9aa7b5", "#5fa8d3", "#3d84b5", "#1f5f8b", "#0d3a5c", "#082a44")
MIN_SHARE = 0.02  # a step of the pyramid is never thinner than this share of the widest


def pyramid(
    labels: Sequence[str], values: Sequence[float], label: str, *, top_down: bool = False
) -> Markup:
    """Return centred horizontal bars, one per label, as a pyramid (the first label at
    the bottom) or, ``top_down``, as a funnel (the first label at the top)."""
    widest = max(values, default=0) or 1
    shown = [max(float(v), widest * MIN_SHARE) if v else 0.0 for v in values]
    colours = [STEPS[min(i, len(STEPS) - 1)] for i in range(len(shown))]
    steps = list(zip(labels, shown, colours, strict=True))
    if top_down:
        steps.reverse()
    chart = make(
        pygal.HorizontalStackedBar,
        width=420,
        height=44 * len(steps) + 16,
        show_legend=False,
        show_x_labels=False,  # the values' axis (horizontal charts swap x and y)
        show_y_guides=False,
        show_x_guides=False,
    )
    chart.x_labels = [name for name, _, _ in steps]
    chart.add("", [{"value": (widest - v) / 2, "color": "transparent"} for _, v, _ in steps])
    chart.add(label, [{"value": v, "color": colour} for _, v, colour in steps])
    return render(chart, label)


def daily_stack(
    days: Sequence[str],
    series: Sequence[tuple[str, Sequence[int]]],
    label: str,
    formatter: Callable[[float], str],
) -> Markup:
    """Return a stacked bar per day, one colour per series (``(name, values per day)``),
    a day label every week; ``formatter`` writes the numbers of the axis."""
    chart = make(
        pygal.StackedBar,
        width=560,  # scaled to the card: the labels stay readable at phone width
        height=290,
        show_minor_x_labels=False,
        x_labels_major_every=7,
        value_formatter=formatter,
    )
    chart.x_labels = list(days)
    for name, values in series:
        chart.add(name, list(values))
    return render(chart, label)


KEEP_DRAWN = 64  # charts kept drawn (pygal takes tens of ms per chart)
_drawn: OrderedDict[Hashable, Markup] = OrderedDict()
_drawn_lock = threading.Lock()


def cached(key: Hashable, draw: Callable[[], Markup]) -> Markup:
    """Return the chart drawn for ``key`` (which must hold everything it shows, the
    language too), drawing it with ``draw`` the first time; the last KEEP_DRAWN are kept."""
    with _drawn_lock:
        if key in _drawn:
            _drawn.move_to_end(key)
            return _drawn[key]
    chart = draw()
    with _drawn_lock:
        _drawn[key] = chart
        while len(_drawn) > KEEP_DRAWN:
            _drawn.popitem(last=False)
    return chart
