"""One log line when a dependency goes away and one when it is back, not one per failure.

Usage::

    redis_outage = Outage(log, "Redis")
    while True:
        try:
            work()
        except redis.ConnectionError as exc:
            redis_outage.down(exc)  # logs a warning on the first failure only
            time.sleep(1)
        else:
            redis_outage.up()  # logs an info line only if it was down

Thread-safe: threads sharing one ``Outage`` log each transition once.
"""

from __future__ import annotations

import logging
import threading
import time


class Outage:
    """Track whether ``what`` is down and log only the transitions (down, back up)."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._lock = threading.Lock()
        self._since: float | None = None  # time.time() of the first failure, None if up
        self._failures = 0

    @property
    def is_down(self) -> bool:
        """Return whether the last report was a failure."""
        return self._since is not None

    @property
    def since(self) -> float | None:
        """Return the wall-clock time the current outage began, or None if up."""
        return self._since

    def down(self, exc: BaseException | str) -> bool:
        """Record a failure; log a warning if this starts an outage. Return whether it did."""
        with self._lock:
            self._failures += 1
            if self._since is not None:
                return False
            self._since = time.time()
            self._failures = 1
        self._log.warning("%s is unavailable: %s", self._what, _reason(exc))
        return True

    def up(self) -> bool:
        """Record a success; log an info line if this ends an outage. Return whether it did."""
        if self._since is None:  # the common path: no lock taken
            return False
        with self._lock:
            if self._since is None:
                return False
            lasted = time.time() - self._since
            failures = self._failures
            self._since = None
            self._failures = 0
        self._log.info(
            "%s is available again after %.1f s (%d failures)", self._what, lasted, failures
        )
        return True


def _reason(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
