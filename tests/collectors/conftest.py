"""Fixtures of the collectors' browser tests: dmp over a real socket, one headless
Chromium per module, and a fresh tab (no cookies, no storage) keeping its console."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from tests.chromium import TIMEOUT_MS, launch, serving
from tests.collectors.browserpages import Collector


@pytest.fixture
def collector(app) -> Iterator[tuple[Collector, int]]:
    """Serve dmp on a free loopback port (pages call it as localhost or 127.0.0.1);
    return its beacon recorder and port."""
    recorder = Collector(app)
    with serving(make_server("127.0.0.1", 0, recorder, threaded=True)) as port:
        yield recorder, port


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """Return one headless Chromium for the module."""
    with launch() as browser:
        yield browser


@pytest.fixture
def tab(chromium) -> Iterator[object]:
    """Return a page in a fresh browser context, its console messages in ``tab.console``."""
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.console = []
    page.on("console", lambda message: page.console.append(message.text))
    yield page
    context.close()
