"""The segment builder pages of the UI (being built: see issue 15's note)."""

from __future__ import annotations

from flask import render_template

from dmp.ui.pages import page_blueprint

bp = page_blueprint("segment_builder", __name__, "/segments/builder")


@bp.get("/")
def index() -> str:
    """Show the area's first page."""
    return render_template("ui/builder/index.html")
