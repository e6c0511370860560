"""The sites and keys pages of the UI (being built: see issue 15's note)."""

from __future__ import annotations

from flask import render_template

from dmp.ui.pages import page_blueprint

bp = page_blueprint("site_pages", __name__, "/sites")


@bp.get("/")
def index() -> str:
    """Show the area's first page."""
    return render_template("ui/sites/index.html")
