"""HTTP for destinations: one session per destination, retries with backoff and jitter.

Every platform throttles, and each says so its own way: HTTP 429 with ``Retry-After``
(Mailchimp, LinkedIn), 429 with ``x-sib-ratelimit-reset`` (Brevo), a 400 whose body
carries error code 4, 17 or 80003 (Meta), ``RESOURCE_EXHAUSTED`` (Google). A
destination passes a ``throttled`` function that reads its platform's signal; 429, 5xx
and broken connections are retried for every platform. The wait honours what the
platform asked for, else grows exponentially with full jitter (redis-py's backoff), so
many dmp workers do not come back in step. Past the last attempt the call raises
``Unavailable``: the sync stops and its next schedule resumes it, nothing lost.

401 and 403 raise ``Refused`` at once (credentials a retry will not cure). Log lines
name the method and path only: query strings and headers may carry keys.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from redis.backoff import FullJitterBackoff

from exporters.destination import Refused, Settings, Unavailable

log = logging.getLogger(__name__)

USER_AGENT = "dmp-exporter/0.1"
RETRIED = frozenset({429, 500, 502, 503, 504})
MAX_WAIT = 300.0  # a platform asking for longer is tried again at the next sync


class Http:
    """A destination's HTTP client: base URL (overridable), auth headers, retries."""

    def __init__(
        self,
        settings: Settings,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        *,
        throttled: Callable[[requests.Response], float | None] | None = None,
        per_minute: int = 0,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.name = settings.name
        self.base_url = (settings.option("base_url") or base_url).rstrip("/")
        self.attempts = max(1, int(settings.option("retry_attempts", "6")))
        self.backoff = FullJitterBackoff(
            cap=float(settings.option("retry_cap", "60")),
            base=float(settings.option("retry_base", "1.0")),
        )
        self.timeout = float(settings.option("timeout", "30"))
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers.update(headers or {})
        if auth:
            self.session.auth = auth
        self.throttled = throttled
        self.pacer = Pacer(per_minute)
        self.retried = 0  # retries so far (the engine counts them per destination)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Return the platform's answer to a request, retrying throttling, 5xx and broken
        connections; raise Unavailable past the last attempt, Refused on 401/403."""
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        where = f"{method} {_masked(url.split('?', 1)[0])}"
        kwargs.setdefault("timeout", self.timeout)
        for attempt in range(self.attempts):
            self.pacer.wait()
            wait: float | None
            try:
                response = self.session.request(method, url, **kwargs)
            except requests.RequestException as exc:
                problem, wait = f"{type(exc).__name__}", None
            else:
                if response.status_code in (401, 403):
                    raise Refused(f"{where}: {response.status_code} {excerpt(response.text)}")
                wait = self.throttled(response) if self.throttled else None
                if wait is None and response.status_code not in RETRIED:
                    return response
                problem = f"{response.status_code} {excerpt(response.text, 120)}"
                wait = wait if wait is not None else retry_after(response)
            if attempt + 1 == self.attempts:
                raise Unavailable(f"{where}: {problem} (after {self.attempts} attempts)")
            if wait is not None and wait > MAX_WAIT:
                raise Unavailable(f"{where}: {problem} (asked to wait {wait:.0f} s)")
            pause = wait if wait else self.backoff.compute(attempt)  # 0: "soon", our backoff
            self.retried += 1
            log.info("%s: %s; retry %d in %.2f s", self.name, where, attempt + 1, pause)
            time.sleep(pause)
        raise AssertionError("unreachable")  # the loop returns or raises

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Return the JSON body of a request's answer (Refused if it is not JSON)."""
        response = self.request(method, path, **kwargs)
        try:
            return response.json() if response.content else None
        except ValueError:
            raise Refused(
                f"{method} {path}: {response.status_code} answered no JSON: "
                f"{excerpt(response.text)}"
            ) from None


def _masked(url: str) -> str:
    """Return a URL with path segments naming an email address masked (some platforms
    put the address in the path: logs and errors must not carry it)."""
    if "@" not in url and "%40" not in url.lower():
        return url
    parts = url.split("/")
    return "/".join("<email>" if "@" in p or "%40" in p.lower() else p for p in parts)


def retry_after(response: requests.Response) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def excerpt(text: str, limit: int = 300) -> str:
    """Return the start of a response body on one line (for errors and logs)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Pacer:
    """Spaces calls to at most ``per_minute`` a minute (0: no limit), for platforms with a
    documented request rate (LinkedIn: 600 a minute)."""

    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_at = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        """Sleep until the next call is allowed."""
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next_at)
            self.next_at = at + self.interval
        if at > now:
            time.sleep(at - now)
