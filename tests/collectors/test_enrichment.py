"""Enrichment: IP truncation before storage, and user-agent parsing in the worker."""

from __future__ import annotations

import ipaddress

import pytest

from collectors.enrichment import parse_agent, truncate_ip

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/16.0 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
GOOGLEBOT_SMARTPHONE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.6478.126 Mobile Safari/537.36 "
    "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)


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


@pytest.mark.parametrize(
    ("ua", "device", "bot", "browser", "os"),
    [
        (CHROME, "desktop", False, "Chrome", "Windows"),
        (IPHONE, "mobile", False, "Mobile Safari", "iOS"),
        (IPAD, "tablet", False, "Mobile Safari", "iOS"),
        (GOOGLEBOT, "bot", True, "Googlebot", "Other"),
        (GOOGLEBOT_SMARTPHONE, "bot", True, "Googlebot", "Android"),
        (
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "bot",
            True,
            "bingbot",
            "Other",
        ),  # fmt: skip
        ("", "other", False, "", ""),
    ],
)
def test_parse_agent(ua, device, bot, browser, os):
    """user-agents gives browser, OS and device class, and flags bots."""
    agent = parse_agent(ua)
    assert (agent.device, agent.is_bot, agent.browser, agent.os) == (device, bot, browser, os)


def test_parse_agent_survives_garbage():
    """Junk User-Agent strings parse to an unknown, non-bot agent."""
    for ua in ("\x00\xff<script>", "x" * 512, "()", "Mozilla/5.0 ("):
        agent = parse_agent(ua)
        assert agent.is_bot is False and agent.device in {"desktop", "mobile", "other"}


def test_parse_agent_is_cached():
    """A repeated User-Agent is parsed once (the parse costs more than a whole hit)."""
    parse_agent.cache_clear()
    first = parse_agent(CHROME)
    assert parse_agent(CHROME) is first
    info = parse_agent.cache_info()
    assert (info.hits, info.misses) == (1, 1)
