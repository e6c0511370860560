"""Enrichment: IP truncation (on the hit path) and user-agent parsing (in the worker, cached)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

import user_agents


def truncate_ip(addr: str) -> str:
    """Return the address with its IPv4 last octet or IPv6 last 80 bits zeroed; '' if invalid."""
    if not addr:
        return ""
    if addr.count(".") == 3 and ":" not in addr:  # fast path for the common case
        head, _, last = addr.rpartition(".")
        if last.isdigit() and all(p.isdigit() and int(p) < 256 for p in head.split(".")):
            return f"{head}.0"
        return ""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(ip) & 0xFFFFFF00))
    if ip.ipv4_mapped is not None:
        return truncate_ip(str(ip.ipv4_mapped))
    return str(ipaddress.IPv6Address(int(ip) & ~((1 << 80) - 1)))


@dataclass(frozen=True, slots=True)
class Agent:
    """What a User-Agent string tells about the browser."""

    browser: str
    os: str
    device: str  # desktop | mobile | tablet | bot | other
    is_bot: bool


_EMPTY_AGENT = Agent("", "", "other", False)


@lru_cache(maxsize=8192)
def parse_agent(ua: str) -> Agent:
    """Return the parsed User-Agent (cached: an uncached parse costs about 1.6 ms)."""
    if not ua:
        return _EMPTY_AGENT
    parsed = user_agents.parse(ua)
    if parsed.is_bot:
        device = "bot"
    elif parsed.is_tablet:
        device = "tablet"
    elif parsed.is_mobile:
        device = "mobile"
    elif parsed.is_pc:
        device = "desktop"
    else:
        device = "other"
    return Agent(parsed.browser.family, parsed.os.family, device, bool(parsed.is_bot))
