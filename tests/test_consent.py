"""Consent rules and enrichment: the page's word, browser signals, Segment's convention, UA, IP."""

from __future__ import annotations

import pytest

from collectors.consent import apply_browser_signals, map_segment_consent, parse_granted
from collectors.enrichment import parse_agent, truncate_ip


@pytest.mark.parametrize(
    ("text", "granted"),
    [
        ("", set()),
        ("analytics", {"analytics"}),
        (" Analytics , ADS,email,bogus", {"analytics", "ads", "email"}),
        (",,,", set()),
    ],
)
def test_parse_granted(text, granted):
    """A comma list grants the named categories and refuses the others."""
    consent = parse_granted(text)
    assert set(consent) == {"analytics", "ads", "email"}
    assert {c for c, g in consent.items() if g} == granted


@pytest.mark.parametrize(
    ("headers", "ads"),
    [({}, True), ({"Sec-GPC": "1"}, False), ({"DNT": "1"}, False), ({"DNT": "0"}, True)],
)
def test_browser_signals_withhold_ads(headers, ads):
    """Sec-GPC: 1 and DNT: 1 withhold ads and nothing else."""
    consent = apply_browser_signals(parse_granted("analytics,ads,email"), headers)
    assert consent == {"analytics": True, "ads": ads, "email": True}


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({}, {}),
        ({"consent": "yes"}, {}),
        ({"consent": {"categoryPreferences": {"Advertising": True}}}, {"ads": True}),
        (
            {"consent": {"categoryPreferences": {"C0002": True, "C0004": False, "Other": True}}},
            {"analytics": True, "ads": False},
        ),
        (
            {"consent": {"categoryPreferences": {"Marketing": True, "Targeting": False}}},
            {"ads": False},  # any refusal among mapped categories wins
        ),
        ({"consent": {"categoryPreferences": {"Newsletter": "true"}}}, {}),  # not a boolean
    ],
)
def test_segment_category_preferences(context, expected):
    """Segment's categoryPreferences map onto dmp's categories; absent means nothing granted."""
    assert map_segment_consent(context) == expected


@pytest.mark.parametrize(
    ("addr", "truncated"),
    [
        ("192.168.10.77", "192.168.10.0"),
        ("2a02:8070:1234:5678:9abc:def0:1111:2222", "2a02:8070:1234::"),
        ("::ffff:10.1.2.3", "10.1.2.0"),
        ("fe80::1%eth0", "fe80::"),
        ("999.1.1.1", ""),
        ("not an ip", ""),
        ("", ""),
    ],
)
def test_truncate_ip(addr, truncated):
    """IPv4 loses its last octet, IPv6 its last 80 bits; garbage gives ''."""
    assert truncate_ip(addr) == truncated


@pytest.mark.parametrize(
    ("ua", "device", "bot"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36",
            "desktop",
            False,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            "mobile",
            False,
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/16.0 Mobile/15E148 Safari/604.1",
            "tablet",
            False,
        ),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot", True),
        ("", "other", False),
    ],
)
def test_parse_agent(ua, device, bot):
    """user-agents gives the device class and flags bots."""
    agent = parse_agent(ua)
    assert (agent.device, agent.is_bot) == (device, bot)
