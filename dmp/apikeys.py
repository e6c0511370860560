"""API keys (admin now, partner later): issued once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

import redis

from dmp import keyspace


class Scope(str, Enum):
    """What a key may do."""

    ADMIN = "admin"
    IMPORT = "import"  # webhooks of other systems (the newsletter tool) may send data


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key's metadata (never the key itself)."""

    key_hash: str
    scope: Scope
    name: str
    created: str


def hash_secret(secret: str) -> str:
    """Return the hex SHA-256 digest under which a key or write key is stored.

    Keys are 192-bit random tokens, so a fast hash is as safe as a slow one here.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(r: redis.Redis, scope: Scope, name: str = "") -> str:
    """Create a key of ``scope``, store its digest and return the key (shown only once)."""
    key = f"dmp_{scope.value[:2]}_{secrets.token_urlsafe(24)}"
    digest = hash_secret(key)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    with r.pipeline() as pipe:
        pipe.hset(
            keyspace.api_key(digest),
            mapping={"scope": scope.value, "name": name, "created": created},
        )
        pipe.sadd(keyspace.ADMIN_KEYS, digest)
        pipe.execute()
    return key


def list_keys(r: redis.Redis) -> list[ApiKey]:
    """Return every stored key's metadata, oldest first."""
    out = []
    for digest in r.smembers(keyspace.ADMIN_KEYS):
        meta = r.hgetall(keyspace.api_key(digest))
        if meta:
            out.append(
                ApiKey(digest, Scope(meta["scope"]), meta.get("name", ""), meta.get("created", ""))
            )
    return sorted(out, key=lambda k: (k.created, k.key_hash))


def revoke_key(r: redis.Redis, prefix: str) -> int:
    """Revoke the keys whose digest starts with ``prefix`` (8+ hex chars); return how many."""
    gone = [d for d in r.smembers(keyspace.ADMIN_KEYS) if d.startswith(prefix)]
    for digest in gone:
        r.delete(keyspace.api_key(digest))
        r.srem(keyspace.ADMIN_KEYS, digest)
    return len(gone)


def check_key(r: redis.Redis, key: str, scope: Scope) -> bool:
    """Return whether ``key`` is a stored key of ``scope``."""
    if not key or len(key) > 200 or not key.isascii():
        return False
    stored = r.hget(keyspace.api_key(hash_secret(key)), "scope")
    return stored is not None and hmac.compare_digest(stored, scope.value)
