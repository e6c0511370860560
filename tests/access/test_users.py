"""UI users: argon2 password hashes, roles, and a lock after repeated wrong passwords."""

from __future__ import annotations

import json

import pytest

from dmp.access import users
from dmp.cli import cli
from dmp.storage import keyspace

PASSWORD = "korrekt-Pferd-Batterie"


def test_a_user_logs_in_with_the_right_password_only(redis):
    """The right password gives the user; a wrong one, an unknown email: None. The
    password is stored only as an argon2id hash."""
    users.add_user(redis, "Anna@Acme.de", PASSWORD, users.Role.MARKETER)
    found = users.authenticate(redis, "anna@acme.de", PASSWORD)
    assert found is not None and (found.email, found.role) == ("anna@acme.de", users.Role.MARKETER)
    assert users.authenticate(redis, "anna@acme.de", PASSWORD + "x") is None
    assert users.authenticate(redis, "ben@acme.de", PASSWORD) is None
    stored = redis.hget(keyspace.user("anna@acme.de"), "hash")
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_repeated_wrong_passwords_lock_the_account_for_a_while(redis):
    """Five wrong passwords in a row lock the account: even the right one fails until the
    lock ends; a right password before that resets the count."""
    users.add_user(redis, "anna@acme.de", PASSWORD, users.Role.VIEWER)
    now = 1_800_000_000_000
    for _ in range(users.MAX_FAILURES - 1):
        assert users.authenticate(redis, "anna@acme.de", "falsch-falsch-1", now) is None
    assert users.authenticate(redis, "anna@acme.de", PASSWORD, now) is not None  # resets
    for _ in range(users.MAX_FAILURES):
        assert users.authenticate(redis, "anna@acme.de", "falsch-falsch-1", now) is None
    assert users.authenticate(redis, "anna@acme.de", PASSWORD, now + 1000) is None
    later = now + users.LOCK_SECONDS * 1000 + 1
    assert users.authenticate(redis, "anna@acme.de", PASSWORD, later) is not None


@pytest.mark.parametrize(
    ("email", "password", "problem"),
    [
        ("not-an-email", PASSWORD, "not an email address"),
        ("anna@acme.de", "kurz", "at least 12"),
        ("anna@acme.de", "x" * 2000, "at most 1024"),
    ],
)
def test_bad_users_are_refused(redis, email, password, problem):
    """Bad emails and passwords too short or too long are refused; nothing is stored."""
    with pytest.raises(users.UserError, match=problem):
        users.add_user(redis, email, password, users.Role.ADMIN)
    assert users.list_users(redis) == []


def test_the_cli_adds_lists_and_removes_users(runner, redis):
    """`dmp users add --password-stdin`, `list --json`, `remove`; bad input exits 2."""
    added = runner.invoke(
        cli, ["users", "add", "anna@acme.de", "--role", "admin", "--password-stdin"], PASSWORD
    )
    assert added.exit_code == 0, added.output
    assert PASSWORD not in added.output
    again = runner.invoke(cli, ["users", "add", "anna@acme.de", "--password-stdin"], PASSWORD)
    assert again.exit_code == 2 and "exists" in again.output
    listed = json.loads(runner.invoke(cli, ["users", "list", "--json"]).output)
    assert [(u["email"], u["role"]) for u in listed] == [("anna@acme.de", "admin")]
    short = runner.invoke(cli, ["users", "add", "ben@acme.de", "--password-stdin"], "kurz")
    assert short.exit_code == 2 and "at least 12" in short.output
    assert runner.invoke(cli, ["users", "remove", "anna@acme.de"]).exit_code == 0
    assert runner.invoke(cli, ["users", "remove", "anna@acme.de"]).exit_code == 2
    assert users.list_users(redis) == []
