"""Rate limits of the collect endpoints: a token bucket per client IP and per write key.

Buckets live in each collector process (a hit must not wait for Redis to be counted), so
the limit a client meets is the configured rate times the number of processes that a
balancer spreads it over. A bucket holds one second of its rate: a burst of that many
requests (one at least), then the rate.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from dmp.web.problems import Problem


class RateLimiter:
    """Token buckets of ``rate`` requests per second by key; 0 limits nothing."""

    def __init__(
        self, rate: float, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.max_keys, self._clock = rate, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, key: str) -> float:
        """Take a request for ``key``: return 0 if it may go, else the seconds until one may."""
        if self.rate <= 0:
            return 0.0
        now, size = self._clock(), max(1.0, self.rate)  # a bucket holds one request at least
        with self._lock:
            tokens, then = self._buckets.pop(key, (size, now))
            tokens = min(size, tokens + (now - then) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > self.max_keys:  # the least recently seen go first
                self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / self.rate


class RateLimits:
    """The collect endpoints' limits: per client IP and per write key."""

    def __init__(self, per_ip: float, per_key: float) -> None:
        self.per_ip, self.per_key = RateLimiter(per_ip), RateLimiter(per_key)

    def wait(self, client_ip: str, write_key: str) -> float:
        """Return 0 if a request may go, else the seconds until the client or key may."""
        # The key's bucket is asked only for what the client's lets through: one client over
        # its limit must not use up its site's budget for everyone else.
        if self.per_ip.rate > 0:  # off: no address is parsed on the pixel's path
            waited = self.per_ip.wait(client_network(client_ip))
            if waited:
                return waited
        return self.per_key.wait(write_key)

    def check(self, client_ip: str, write_key: str) -> None:
        """Raise 429 (problem+json, Retry-After) for a request over a limit."""
        wait = self.wait(client_ip, write_key)
        if wait > 0:
            raise Problem(
                429,
                "Too many requests",
                "this client or write key sends more than its limit; retry later",
                "rate-limited",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )


def client_network(ip: str) -> str:
    """Return what a client is limited by: its IPv4 address, or its IPv6 /64 (a client
    may take any address of its network)."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
