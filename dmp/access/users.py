"""Users of the marketer UI: an email, a role, and an argon2 hash of their password.

Roles: ``admin`` (everything, users and keys too), ``marketer`` (segments, scoring,
destinations), ``viewer`` (reads only). Passwords are hashed with argon2id (the
``argon2-cffi`` package's defaults, rehashed when those change) and never stored or
logged in clear. After ``MAX_FAILURES`` wrong passwords in a row an account is locked
for ``LOCK_SECONDS``; the lock is the same answer as a wrong password, so it tells a
guesser nothing, and a right password during it does not log in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from dmp.people.identity import normalise_email
from dmp.storage import keyspace

MIN_PASSWORD = 12  # characters
MAX_PASSWORD = 1024  # argon2 takes any length; this keeps a request's work bounded
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60
_HASHER = PasswordHasher()


class Role(str, Enum):
    """What a UI user may do."""

    ADMIN = "admin"
    MARKETER = "marketer"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class User:
    """A stored user (never the password)."""

    email: str
    role: Role
    created: int  # ms
    locked_until: int = 0  # ms; 0 when not locked


class UserError(ValueError):
    """A user cannot be added as asked (the message says why, one line)."""


def add_user(
    r: redis.Redis, email: str, password: str, role: Role, *, replace: bool = False
) -> User:
    """Store a user with the hash of ``password``; return the User (UserError says why not)."""
    address = normalise_email(email)
    if not address:
        raise UserError(f"{email[:80]!r} is not an email address")
    check_password(password)
    key = keyspace.user(address)
    if r.exists(key) and not replace:
        raise UserError(f"a user {address} exists (set a new password with --replace)")
    now = int(time.time() * 1000)
    with r.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping={"role": role.value, "hash": _HASHER.hash(password), "created": now})
        pipe.sadd(keyspace.USERS, address)
        pipe.execute()
    return User(address, role, now)


def check_password(password: str) -> None:
    """Raise UserError unless a password is long enough and not absurdly long."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password may have at most {MAX_PASSWORD} characters")


def authenticate(
    r: redis.Redis, email: str, password: str, now_ms: int | None = None
) -> User | None:
    """Return the User if the password is right and the account not locked, else None
    (a wrong password counts towards the lock)."""
    address = normalise_email(email)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    stored = r.hgetall(keyspace.user(address)) if address else {}
    locked = bool(stored) and int(stored.get("locked_until", 0)) > now
    if not stored or locked or len(password) > MAX_PASSWORD:
        _HASHER.hash("x" * MIN_PASSWORD)  # the same work as a check: timing tells nothing
        return None
    try:
        _HASHER.verify(stored["hash"], password)
    except (VerificationError, InvalidHashError):
        _failed(r, address, now)
        return None
    with r.pipeline(transaction=True) as pipe:
        pipe.hdel(keyspace.user(address), "failures", "locked_until")
        if _HASHER.check_needs_rehash(stored["hash"]):
            pipe.hset(keyspace.user(address), "hash", _HASHER.hash(password))
        pipe.execute()
    return User(address, Role(stored["role"]), int(stored["created"]))


def _failed(r: redis.Redis, address: str, now: int) -> None:
    """Count a wrong password; lock the account after MAX_FAILURES in a row."""
    failures = r.hincrby(keyspace.user(address), "failures", 1)
    if failures >= MAX_FAILURES:
        r.hset(
            keyspace.user(address),
            mapping={"failures": 0, "locked_until": now + LOCK_SECONDS * 1000},
        )


def get_user(r: redis.Redis, email: str) -> User | None:
    """Return the stored user with this email (None if there is none)."""
    address = normalise_email(email)
    stored = r.hgetall(keyspace.user(address)) if address else {}
    if not stored:
        return None
    locked = int(stored.get("locked_until", 0))
    return User(address, Role(stored["role"]), int(stored["created"]), locked)


def list_users(r: redis.Redis) -> list[User]:
    """Return every user, by email."""
    found = (get_user(r, address) for address in sorted(r.smembers(keyspace.USERS)))
    return [user for user in found if user is not None]


def remove_user(r: redis.Redis, email: str) -> bool:
    """Remove a user; return whether there was one."""
    address = normalise_email(email)
    with r.pipeline(transaction=True) as pipe:
        pipe.srem(keyspace.USERS, address)
        pipe.delete(keyspace.user(address))
        removed, _ = pipe.execute()
    return bool(removed)
