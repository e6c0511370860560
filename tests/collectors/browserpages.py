"""What the collectors' browser tests share: dmp over a real socket noting each beacon's
answer, and the page-side checks (a beacon's status, dmp's cookie). The fixtures that
use them are in tests/collectors/conftest.py."""

from __future__ import annotations

import threading
from collections.abc import Callable

from tests.chromium import TIMEOUT_MS


class Collector:
    """The dmp app over a real socket, noting the status of every beacon it answered."""

    def __init__(self, app) -> None:
        self.app = app
        self.answers: list[int] = []
        self._seen = threading.Condition()

    def __call__(self, environ, start_response):
        """Serve the app; note /collect POST statuses (after the app stored what it took)."""

        def noting(status_line, headers, exc_info=None):
            if environ["PATH_INFO"] == "/collect" and environ["REQUEST_METHOD"] == "POST":
                with self._seen:
                    self.answers.append(int(status_line[:3]))
                    self._seen.notify_all()
            return start_response(status_line, headers, exc_info)

        return self.app(environ, noting)

    def wait_for(self, count: int) -> list[int]:
        """Return the statuses of the first ``count`` beacons, waiting up to 10 s for them."""
        with self._seen:
            arrived = self._seen.wait_for(lambda: len(self.answers) >= count, TIMEOUT_MS / 1000)
        assert arrived, f"{len(self.answers)} of {count} beacons reached the collector"
        return self.answers[:count]


def answered(page, action: Callable[[], object]) -> int:
    """Run ``action`` and return the status of the /collect answer the page received."""
    with page.expect_response(lambda r: r.url.endswith("/collect")) as beacon:
        action()
    return beacon.value.status


def dmp_cookie(page) -> dict | None:
    """Return dmp's own dmp_uid cookie as the browser holds it, or None."""
    return next((c for c in page.context.cookies() if c["name"] == "dmp_uid"), None)
