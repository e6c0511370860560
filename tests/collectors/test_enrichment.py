"""Enrichment on the hit path: IP truncation before storage."""

from __future__ import annotations

import ipaddress

import pytest

from collectors.enrichment import truncate_ip


@pytest.mark.parametrize(
    ("addr", "truncated"),
    [
        ("192.168.10.77", "192.168.10.0"),
        ("203.0.113.255", "203.0.113.0"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.0"),
        ("2a02:8070:1234:5678:9abc:def0:1111:2222", "2a02:8070:1234::"),
        ("2001:DB8:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF", "2001:db8:ffff::"),
        ("2001:db8::1", "2001:db8::"),
        ("::1", "::"),
        ("fe80::1%eth0", "fe80::"),
        ("::ffff:10.1.2.3", "10.1.2.0"),  # v4-mapped: truncated as IPv4
        ("::ffff:a01:203", "10.1.2.0"),
    ],
)
def test_truncate_ip(addr, truncated):
    """IPv4 loses its last octet, IPv6 its last 80 bits, a v4-mapped address its last octet."""
    assert truncate_ip(addr) == truncated


@pytest.mark.parametrize(
    "addr",
    [
        "",
        "not an ip",
        "999.1.1.1",
        "1.2.3.256",
        "1.2.3.999",
        "1.2.3",
        "1.2.3.4.5",
        "1..3.4",
        "01.2.3.4",  # leading zeros are ambiguous (octal to some parsers)
        "1.2.3.4 ",
        " 1.2.3.4",
        "\u0661.2.3.4",  # Arabic-Indic digit one: str.isdigit says yes, IP says no
        "1" * 5000 + ".1.1.1",
        "1.2.3.4, 5.6.7.8",
        "2001:db8::g",
        "2001:db8:::1",
        ":::",
        "1.2.3.4:80",
    ],
)
def test_truncate_ip_refuses_garbage(addr):
    """Anything that is not exactly one IP address gives '' (and never raises)."""
    assert truncate_ip(addr) == ""


def test_truncated_ipv6_keeps_48_bits():
    """Exactly the first 48 bits of an IPv6 address survive."""
    full = ipaddress.IPv6Address("2001:db8:abcd:ef01:2345:6789:abcd:ef01")
    kept = ipaddress.IPv6Address(truncate_ip(str(full)))
    assert int(kept) == int(full) >> 80 << 80 and int(kept) & ((1 << 80) - 1) == 0
