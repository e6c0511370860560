"""API keys: issued once, stored only as a SHA-256 digest.

An admin key runs the admin API; an import key lets other systems' webhooks send data; a
partner key (an ad tool) pulls only the audiences shared with it; a server key is one
site's secret write key for its server-side sources (Segment's server SDKs): what they
send is trusted, where what a browser sends with the site's public write key is only a
claim (see ``dmp.ingest.claims``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

import redis

from dmp.storage import keyspace


class Scope(str, Enum):
    """What a key may do."""

    ADMIN = "admin"
    IMPORT = "import"  # webhooks of other systems (the newsletter tool) may send data
    PARTNER = "partner"  # an ad tool: lookups of the audiences shared with it
    SERVER = "server"  # one site's server-side sources: trusted writes to the Segment API


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key's metadata (never the key itself)."""

    key_hash: str
    scope: Scope
    name: str
    created: str
    audiences: tuple[str, ...] = ()  # partner keys: the segment ids shared
    site: str = ""  # server keys: the site they write for


def hash_secret(secret: str) -> str:
    """Return the hex SHA-256 digest under which a key or write key is stored.

    Keys are 192-bit random tokens, so a fast hash is as safe as a slow one here.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def key_prefix(scope: Scope) -> str:
    """Return what every API key of ``scope`` starts with (dmp_ad_, dmp_im_, dmp_pa_)."""
    return f"dmp_{scope.value[:2]}_"


def create_key(
    r: redis.Redis,
    scope: Scope,
    name: str = "",
    audiences: tuple[str, ...] = (),
    site: str = "",
) -> str:
    """Create a key of ``scope``, store its digest and return the key (shown only once)."""
    if (scope is Scope.PARTNER) != bool(audiences):
        raise ValueError("a partner key needs audiences, and only a partner key has them")
    if (scope is Scope.SERVER) != bool(site):
        raise ValueError("a server key needs a site, and only a server key has one")
    key = f"{key_prefix(scope)}{secrets.token_urlsafe(24)}"
    digest = hash_secret(key)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    with r.pipeline(transaction=True) as pipe:  # a RedisCluster's default is none
        pipe.hset(
            keyspace.api_key(digest),
            mapping={
                "scope": scope.value,
                "name": name,
                "created": created,
                "audiences": ",".join(audiences),
                "site": site,
            },
        )
        pipe.sadd(keyspace.API_KEYS, digest)
        pipe.execute()
    return key


def list_keys(r: redis.Redis) -> list[ApiKey]:
    """Return every stored key's metadata, oldest first."""
    out = []
    for digest in r.smembers(keyspace.API_KEYS):
        meta = r.hgetall(keyspace.api_key(digest))
        if meta:
            out.append(_record(digest, meta))
    return sorted(out, key=lambda k: (k.created, k.key_hash))


def revoke_key(r: redis.Redis, prefix: str) -> int:
    """Revoke the keys whose digest starts with ``prefix`` (8+ hex chars); return how many."""
    gone = [d for d in r.smembers(keyspace.API_KEYS) if d.startswith(prefix)]
    for digest in gone:
        r.delete(keyspace.api_key(digest))
        r.srem(keyspace.API_KEYS, digest)
    return len(gone)


def check_key(r: redis.Redis, key: str, scope: Scope) -> bool:
    """Return whether ``key`` is a stored key of ``scope``."""
    if not key or len(key) > 200 or not key.isascii():
        return False
    stored = r.hget(keyspace.api_key(hash_secret(key)), "scope")
    return stored is not None and hmac.compare_digest(stored, scope.value)


def server_key_site(r: redis.Redis, key: str) -> str | None:
    """Return the site a server key writes for, or None if ``key`` is no server key."""
    if not key.startswith(key_prefix(Scope.SERVER)) or len(key) > 200 or not key.isascii():
        return None
    scope, site = r.hmget(keyspace.api_key(hash_secret(key)), "scope", "site")
    return site if scope == Scope.SERVER.value and site else None


def revoke_site_keys(r: redis.Redis, site_id: str) -> int:
    """Revoke every server key of a site (the site is removed); return how many."""
    gone = [k.key_hash for k in list_keys(r) if k.scope is Scope.SERVER and k.site == site_id]
    for digest in gone:
        r.delete(keyspace.api_key(digest))
        r.srem(keyspace.API_KEYS, digest)
    return len(gone)


def _record(digest: str, meta: dict[str, str]) -> ApiKey:
    audiences = tuple(a for a in meta.get("audiences", "").split(",") if a)
    return ApiKey(
        digest,
        Scope(meta["scope"]),
        meta.get("name", ""),
        meta.get("created", ""),
        audiences,
        meta.get("site", ""),
    )


def unshare(r: redis.Redis, sid: str) -> int:
    """Take a segment out of every partner key's audiences (it was deleted: an id made
    again later must not be shared unasked); return how many keys had it."""
    changed = 0
    for digest in r.smembers(keyspace.API_KEYS):
        key = keyspace.api_key(digest)
        audiences = (r.hget(key, "audiences") or "").split(",")
        if sid in audiences:
            r.hset(key, "audiences", ",".join(a for a in audiences if a != sid))
            changed += 1
    return changed
