"""UI fixtures: users of each role, logged-in test clients, and a real headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis as redis_lib
from flask import Flask
from flask.testing import FlaskClient

from dmp.access.users import Role, add_user
from tests.ui.browser import Browser, open_browser

PASSWORD = "correct horse battery"
EMAILS = {role: f"{role.value}@acme.de" for role in Role}
_TOKEN = re.compile(r'name="csrf-token" content="([^"]+)"')


@pytest.fixture
def users(redis: redis_lib.Redis) -> dict[Role, str]:
    """Return the email of one user of each role (password: PASSWORD)."""
    for role, email in EMAILS.items():
        add_user(redis, email, PASSWORD, role)
    return EMAILS


def csrf_of(html: str) -> str:
    """Return the CSRF token a page carries in its header."""
    found = _TOKEN.search(html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def log_in(client: FlaskClient, email: str, password: str = PASSWORD) -> str:
    """Log ``client`` in through the form; return the CSRF token of its session."""
    token = csrf_of(client.get("/ui/login").get_data(as_text=True))
    res = client.post("/ui/login", data={"email": email, "password": password, "csrf_token": token})
    assert res.status_code == 303, res.get_data(as_text=True)[:500]
    return csrf_of(client.get(res.headers["Location"]).get_data(as_text=True))


class Session:
    """A logged-in test client that sends the session's CSRF token with every change."""

    def __init__(self, client: FlaskClient, token: str) -> None:
        self.client = client
        self.token = token

    def get(self, path: str, **kwargs):
        """GET a page."""
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, **kwargs):
        """POST a form with the CSRF token."""
        return self.client.post(path, data={"csrf_token": self.token, **(data or {})}, **kwargs)


@pytest.fixture
def as_marketer(app: Flask, users: dict[Role, str]) -> Session:
    """Return a session logged in as a marketer."""
    client = app.test_client()
    return Session(client, log_in(client, users[Role.MARKETER]))


@pytest.fixture
def as_admin(app: Flask, users: dict[Role, str]) -> Session:
    """Return a session logged in as an admin."""
    client = app.test_client()
    return Session(client, log_in(client, users[Role.ADMIN]))


@pytest.fixture
def as_viewer(app: Flask, users: dict[Role, str]) -> Session:
    """Return a session logged in as a viewer."""
    client = app.test_client()
    return Session(client, log_in(client, users[Role.VIEWER]))


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """Return one headless Chromium for the session's browser tests."""
    with open_browser() as browser:
        yield browser
