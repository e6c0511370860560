"""The UI's charts: pygal drawn on the server as inline SVG, in the UI's colours.

Every chart is static SVG (pygal's tooltip script, which it would load from a CDN, is
left out: the CSP allows only dmp's own scripts), and is labelled for screen readers;
pages show the numbers beside or under it as well, for reading and for clicking.
"""

from __future__ import annotations

import re
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
