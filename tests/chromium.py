"""Real headless Chromium for the browser tests (Debian's, driven by Playwright), and
what serves their pages: a static folder, plus the npm packages in tests/node_modules
under /node_modules/ (installed by tests/run.sh), on a real socket."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and os.path.exists(p)), None
)
REQUIRED = bool(os.environ.get("DMP_REQUIRE_BROWSER"))  # CI: a missing browser fails, not skips
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
TIMEOUT_MS = 10_000
NODE_MODULES = Path(__file__).resolve().parent / "node_modules"


def sync_api() -> Any:
    """Return playwright.sync_api; skip the test without Chromium (fail under
    DMP_REQUIRE_BROWSER, as tests/run.sh sets)."""
    if CHROMIUM is None and not REQUIRED:
        pytest.skip("Chromium is not installed (tests/run.sh installs it)")
    if CHROMIUM is None:
        pytest.fail("DMP_REQUIRE_BROWSER is set but no Chromium is installed")
    if REQUIRED:
        from playwright import sync_api as api

        return api
    return pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def launch() -> Iterator[Any]:
    """Start headless Chromium through Playwright; close it after."""
    api = sync_api()
    with api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def npm_file(relative: str) -> Path:
    """Return a file of an npm package the tests installed; fail saying how to get it."""
    path = NODE_MODULES / relative
    if not path.exists():
        pytest.fail(f"{path} is missing: run `npm ci --prefix tests` (tests/run.sh does)")
    return path


@contextlib.contextmanager
def serving(server: Any) -> Iterator[int]:
    """Run a socket server (http.server or werkzeug's) on a thread; yield its port."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(5)


class _Pages(SimpleHTTPRequestHandler):
    """Files of one folder, and /node_modules/… from tests/node_modules."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def translate_path(self, path: str) -> str:
        """Map /node_modules/… to the installed packages, the rest to the page folder."""
        if path.startswith("/node_modules/"):
            relative = path.split("?", 1)[0].split("#", 1)[0][len("/node_modules/") :]
            resolved = (NODE_MODULES / relative).resolve()
            if NODE_MODULES in resolved.parents:
                return str(resolved)
        return super().translate_path(path)

    def log_message(self, *args: Any) -> None:
        """Keep the test output clean: the page server logs nothing."""


@contextlib.contextmanager
def page_server(folder: Path, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve ``folder`` (and /node_modules/) on a free port of ``host``; yield the port."""
    handler = partial(_Pages, directory=str(folder))
    with serving(ThreadingHTTPServer((host, 0), handler)) as port:
        yield port
