"""The persons pages of the UI (being built: see issue 15's note)."""

from __future__ import annotations

from flask import render_template

from dmp.ui.pages import page_blueprint

bp = page_blueprint("person_pages", __name__, "/persons")


@bp.get("/")
def index() -> str:
    """Show the area's first page."""
    return render_template("ui/persons/index.html")
