"""Enrichment on the hit path: IP truncation (user agents are parsed in the worker:
:mod:`dmp.ingest.useragent`)."""

from __future__ import annotations

import ipaddress


def truncate_ip(addr: str) -> str:
    """Return the address with its IPv4 last octet or IPv6 last 80 bits zeroed; '' if invalid."""
    if not addr or len(addr) > 64:
        return ""
    if ":" not in addr:  # IPv4, the common case: checked by hand, ipaddress costs a µs
        parts = addr.split(".")
        if len(parts) == 4 and all(_is_octet(p) for p in parts):
            return f"{parts[0]}.{parts[1]}.{parts[2]}.0"
        return ""
    try:
        ip = ipaddress.IPv6Address(addr.split("%", 1)[0])
    except ValueError:
        return ""
    if ip.ipv4_mapped is not None:
        return truncate_ip(str(ip.ipv4_mapped))
    return str(ipaddress.IPv6Address(int(ip) & ~((1 << 80) - 1)))


def _is_octet(part: str) -> bool:
    # ASCII digits only (str.isdigit also takes other scripts' digits), no leading zero.
    return (
        0 < len(part) <= 3
        and part.isascii()
        and part.isdigit()
        and int(part) < 256
        and (part[0] != "0" or part == "0")
    )
