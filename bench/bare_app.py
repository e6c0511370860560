"""The pixel benchmark's baseline: a bare Flask app answering the same GIF, nothing else.

    python bench/bare_app.py --port P [--workers 2] [--threads 4] [--wsgi]

It is served by dmp's own gunicorn set-up: ``dmp.serve.server.serve`` with the ingest worker off
and only the WSGI app swapped for this one. Worker class, processes, threads, timeouts and
logging are therefore exactly those of ``dmp serve`` and follow it should they change.
(``serve`` also attaches an embedded Redis under a throw-away data dir; it sits idle.)

``--wsgi`` serves the GIF as a plain WSGI callable instead of a Flask route: the floor of
the server itself, shown beside the two for context (dmp's pixel is answered in plain WSGI
in front of Flask, so it skips Flask's routing that the bare Flask app pays for).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from flask import Flask, Response

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from collectors.pixel import GIF, HEADERS  # noqa: E402

app = Flask(__name__)


@app.get("/p.gif")
def pixel() -> Response:
    """Answer the 1x1 GIF with the pixel's headers."""
    return Response(GIF, headers=HEADERS)


def wsgi_app(environ, start_response):
    """Answer every request with the GIF and the pixel's headers, no framework at all."""
    start_response("200 OK", list(HEADERS))
    return [GIF]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--wsgi", action="store_true", help="plain WSGI instead of Flask")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("DMP_DATA_DIR") or None,
        help="for the idle embedded Redis (default: $DMP_DATA_DIR, else a temporary dir)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from dmp.config import load_config
    from dmp.serve import server

    served = wsgi_app if args.wsgi else app

    class BareGunicorn(server._Gunicorn):
        """dmp's gunicorn application with the same options and the bare app."""

        def __init__(self, options, _factory) -> None:
            shown = {k: v for k, v in options.items() if not callable(v)}
            logging.info("bare app under dmp's gunicorn options: %s", shown)
            super().__init__(options, lambda: served)

    server._Gunicorn = BareGunicorn  # type: ignore[misc]
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="dmp-bare-"))
    config = load_config({"data_dir": data_dir}, env={})
    server.serve(config, args.host, args.port, args.workers, args.threads, ingest=False)


if __name__ == "__main__":
    main()
