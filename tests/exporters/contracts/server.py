"""The base of every platform's contract server: a Flask app on a real socket, in a thread.

Each platform module here (``meta.py``, ``mailchimp.py`` …) builds a Flask app that
speaks that platform's documented contract (auth, request shapes, per-request limits,
hashed-identifier checks, error bodies) and keeps what the platform would hold. This
base serves it on ``127.0.0.1`` over a real socket, records every request, and lets a
test queue faults: the next requests answer a throttle or an outage in the platform's
own words, then the platform behaves again.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request
from werkzeug.serving import make_server

Fault = Callable[[], Response]


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the server got."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Return the body as JSON."""
        import json

        return json.loads(self.body)


class ContractServer:
    """Serve a platform's app on a free localhost port until stopped."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.seen: list[Seen] = []
        self.faults: deque[Fault] = deque()
        self.lock = threading.Lock()
        app.before_request(self._before)
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> ContractServer:
        """Start serving; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ContractServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, *faults: Fault) -> None:
        """Answer the next requests with these faults, one each, in order."""
        with self.lock:
            self.faults.extend(faults)

    def _before(self) -> Response | None:
        with self.lock:
            self.seen.append(
                Seen(
                    request.method,
                    request.path,
                    dict(request.args),
                    dict(request.headers),
                    request.get_data(),
                )
            )
            fault = self.faults.popleft() if self.faults else None
        return fault() if fault else None

    def requests_to(self, method: str, suffix: str) -> list[Seen]:
        """Return the requests seen with this method whose path ends with ``suffix``."""
        with self.lock:
            return [s for s in self.seen if s.method == method and s.path.endswith(suffix)]
