"""The pixel benchmark's baseline: a bare Flask app answering the same GIF, nothing else."""

from __future__ import annotations

from flask import Flask, Response

from collectors.pixel import GIF, HEADERS

app = Flask(__name__)


@app.get("/p.gif")
def pixel() -> Response:
    """Answer the 1x1 GIF with the pixel's headers."""
    return Response(GIF, headers=HEADERS)
