"""The overview page: how many people dmp knows at each involvement tier."""

from __future__ import annotations

from flask import render_template

from dmp.ingest.worker import status
from dmp.ui.pages import page_blueprint
from dmp.web.deps import current_deps

bp = page_blueprint("overview", __name__)


@bp.get("/")
def index() -> str:
    """Show the involvement pyramid."""
    counts = status(current_deps().redis)
    return render_template("ui/overview.html", counts=counts)
