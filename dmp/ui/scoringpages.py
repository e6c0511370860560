"""The scoring pages of the UI (being built: see issue 15's note)."""

from __future__ import annotations

from flask import render_template

from dmp.ui.pages import page_blueprint

bp = page_blueprint("scoring_pages", __name__, "/scoring")


@bp.get("/")
def index() -> str:
    """Show the area's first page."""
    return render_template("ui/scoring/index.html")
