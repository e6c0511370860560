"""User-agent parsing in the worker: device, bot flag, browser and OS, cached."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dmp.ingest.useragent import parse_agent
from tests.factories import CHROME, GOOGLEBOT

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/16.0 Mobile/15E148 Safari/604.1"
)
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
GOOGLEBOT_SMARTPHONE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.6478.126 Mobile Safari/537.36 "
    "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)


@pytest.mark.parametrize(
    ("ua", "device", "bot", "browser", "os"),
    [
        (CHROME, "desktop", False, "Chrome", "Windows"),
        (IPHONE, "mobile", False, "Mobile Safari", "iOS"),
        (IPAD, "tablet", False, "Mobile Safari", "iOS"),
        (GOOGLEBOT, "bot", True, "Googlebot", "Other"),
        (GOOGLEBOT_SMARTPHONE, "bot", True, "Googlebot", "Android"),
        (BINGBOT, "bot", True, "bingbot", "Other"),
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


def test_the_parser_is_loaded_by_the_worker_not_by_every_import_of_the_event_log():
    """Loading the parser takes 0.2 s: the CLI and matrix builds do not pay it."""
    code = (
        "import sys, dmp.cli, dmp.matrix.builds, dmp.ingest.worker\n"
        "assert 'user_agents' not in sys.modules, 'loaded on import'\n"
        "from dmp.ingest.useragent import load_parser\n"
        "load_parser()\n"
        "assert 'user_agents' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_starting_worker_loads_the_parser_before_its_first_batch(redis, config, monkeypatch):
    from dmp.ingest import useragent
    from dmp.ingest.worker import Worker

    loaded = []
    monkeypatch.setattr(useragent, "load_parser", lambda: loaded.append(True))
    Worker(redis, config).start()
    assert loaded == [True]
