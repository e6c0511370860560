"""Sites: the websites that send hits, each with its domains and a hashed write key."""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import urlsplit

import redis

from dmp.access.apikeys import hash_secret, revoke_site_keys, server_key_site
from dmp.storage import keyspace

_PARAM = re.compile(r"[a-z0-9_.\-\[\]]{1,64}")  # a query parameter's name, lowercase
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


WRITE_KEY_PREFIX = "wk_"  # what every write key starts with (and log redaction looks for)


@dataclass(frozen=True, slots=True)
class Site:
    """A website that sends hits to dmp."""

    site_id: str
    name: str
    domains: tuple[str, ...]
    created: str
    keep_params: frozenset[str] = frozenset()  # query parameters its URLs keep, with utm_*

    def allows_origin(self, origin: str) -> bool:
        """Return whether a browser Origin belongs to one of the site's domains (or a subdomain)."""
        host = (urlsplit(origin).hostname or "").lower() if origin else ""
        return bool(host) and covering_domain(host, self.domains) is not None


def covering_domain(host: str, domains: Iterable[str]) -> str | None:
    """Return the domain a host name is, or is a subdomain of, among ``domains`` (None if
    none): the rule for which pages may send with a site's write key. Ports and schemes
    play no part."""
    return next((d for d in domains if host == d or host.endswith("." + d)), None)


class SiteError(ValueError):
    """A site request that cannot be done (bad name or domain, duplicate, unknown)."""


def normalise_domain(text: str) -> str:
    """Return a bare lowercase host name from a domain or URL; raise SiteError if invalid."""
    text = text.strip().lower()
    host = urlsplit(text).hostname if "//" in text else text.split("/", 1)[0].split(":", 1)[0]
    host = (host or "").rstrip(".")
    if not _DOMAIN.match(host):
        raise SiteError(f"not a domain name: {text!r}")
    return host


def slugify(name: str) -> str:
    """Return the site id made from a site name."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    if not slug or len(slug) > 64:
        raise SiteError("a site name needs 1 to 64 letters or digits")
    return slug


def add_site(
    r: redis.Redis, name: str, domains: list[str], keep_params: Iterable[str] = ()
) -> tuple[Site, str]:
    """Create a site and return it with its write key (shown only once)."""
    site_id = slugify(name)
    if not domains:
        raise SiteError("a site needs at least one --domain")
    clean = tuple(dict.fromkeys(normalise_domain(d) for d in domains))
    keep = normalise_params(keep_params)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    write_key = f"{WRITE_KEY_PREFIX}{secrets.token_urlsafe(24)}"
    if not r.hsetnx(keyspace.site(site_id), "name", name):
        raise SiteError(f"a site {site_id!r} exists already")
    with r.pipeline(transaction=True) as pipe:  # a RedisCluster's default is none
        pipe.hset(
            keyspace.site(site_id),
            mapping={
                "domains": ",".join(clean),
                "created": created,
                "write_key": hash_secret(write_key),
                # Public (every page that embeds the tag shows it): kept readable, so the
                # UI can show the site's snippets again; lookups go by the digest.
                "public_write_key": write_key,
                "keep_params": ",".join(sorted(keep)),
            },
        )
        pipe.set(keyspace.write_key(hash_secret(write_key)), site_id)
        pipe.sadd(keyspace.SITES, site_id)
        pipe.execute()
    return Site(site_id, name, clean, created, keep), write_key


def normalise_params(names: Iterable[str]) -> frozenset[str]:
    """Return query parameter names as a site keeps them (lowercase); SiteError if one
    cannot be a parameter name."""
    keep = frozenset(n.strip().lower() for n in names)
    for name in keep:
        if not _PARAM.fullmatch(name):
            raise SiteError(f"not a query parameter name: {name!r}")
    return keep


def set_keep_params(r: redis.Redis, site_id: str, names: Iterable[str]) -> Site:
    """Replace the query parameters a site's URLs keep; return the site."""
    keep = normalise_params(names)
    site = get_site(r, site_id)
    if site is None:
        raise SiteError(f"no site {site_id!r}")
    r.hset(keyspace.site(site_id), "keep_params", ",".join(sorted(keep)))
    return dataclasses.replace(site, keep_params=keep)


def get_site(r: redis.Redis, site_id: str) -> Site | None:
    """Return the site with ``site_id``, or None."""
    data = r.hgetall(keyspace.site(site_id))
    if not data or "domains" not in data:
        return None
    domains = tuple(filter(None, data["domains"].split(",")))
    keep = frozenset(filter(None, data.get("keep_params", "").split(",")))
    return Site(site_id, data["name"], domains, data["created"], keep)


def public_write_key(r: redis.Redis, site_id: str) -> str | None:
    """Return a site's public write key (None for a site added before it was kept)."""
    return r.hget(keyspace.site(site_id), "public_write_key")


def list_sites(r: redis.Redis) -> list[Site]:
    """Return every site, by id."""
    return [s for s in (get_site(r, sid) for sid in sorted(r.smembers(keyspace.SITES))) if s]


def remove_site(r: redis.Redis, site_id: str) -> None:
    """Delete a site, its write key and its server keys (its stored events stay)."""
    digest = r.hget(keyspace.site(site_id), "write_key")
    if digest is None:
        raise SiteError(f"no site {site_id!r}")
    r.delete(keyspace.site(site_id), keyspace.write_key(digest))
    r.srem(keyspace.SITES, site_id)
    revoke_site_keys(r, site_id)


def change_domains(
    r: redis.Redis, site_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()
) -> Site:
    """Add and remove domains of a site (validated as add_site does; a site keeps at least
    one); return the site as it is then."""
    added = [normalise_domain(d) for d in add]
    removed = {normalise_domain(d) for d in remove}
    with r.pipeline(transaction=True) as pipe:  # a RedisCluster's default is none
        while True:
            try:
                pipe.watch(keyspace.site(site_id))
                site = get_site(pipe, site_id)
                if site is None:
                    raise SiteError(f"no site {site_id[:80]!r} (dmp sites list)")
                unknown = sorted(removed - set(site.domains))
                if unknown:
                    raise SiteError(f"{unknown[0]} is not a domain of site {site_id}")
                kept = [d for d in dict.fromkeys([*site.domains, *added]) if d not in removed]
                if not kept:
                    raise SiteError("a site keeps at least one domain")
                pipe.multi()
                pipe.hset(keyspace.site(site_id), "domains", ",".join(kept))
                pipe.execute()
                return dataclasses.replace(site, domains=tuple(kept))
            except redis.WatchError:
                continue


class Caller(NamedTuple):
    """Who sent a hit: the site, and whether with a server key (trusted) or the public
    write key that every browser visiting the site can read (a claim)."""

    site: Site
    trusted: bool


class SiteCache:
    """Per-process cache of write key -> site, so a hit costs no Redis round trip for it.

    While Redis is away, entries past their time are served as they were (a site's key
    rarely changes; a lost hit is worse); a key never seen raises the Redis error. After a
    failed lookup Redis is not asked again for QUIET_SECONDS (a hung Redis would hold every
    request for the client's timeout). Known keys are never evicted by a flood of made-up
    ones.
    """

    QUIET_SECONDS = 2.0  # after a failed lookup, Redis is not asked again for this long

    def __init__(self, r: redis.Redis, ttl: float) -> None:
        self._r = r
        self._ttl = ttl
        self._by_key: dict[str, tuple[float, Caller]] = {}  # known keys: never evicted
        self._misses: dict[str, float] = {}  # unknown keys, bounded
        self._all: tuple[float, list[Site]] = (0.0, [])
        self._quiet_until = 0.0

    def site_for_key(self, write_key: str) -> Site | None:
        """Return the site a public write key belongs to, or None (misses are cached too).

        A server key is refused here: it is a secret, and a browser collector that took
        it would make a leaked key look like a working one.
        """
        caller = self.caller_of(write_key)
        return caller.site if caller is not None and not caller.trusted else None

    def caller_of(self, write_key: str) -> Caller | None:
        """Return the site and trust of a public write key or a server key, or None."""
        if not valid_write_key(write_key):
            return None  # write keys are ASCII tokens; anything else is nobody's
        now = time.monotonic()
        hit = self._by_key.get(write_key)
        if hit is not None and hit[0] > now:
            return hit[1]
        if hit is None and self._misses.get(write_key, 0.0) > now:
            return None
        if now < self._quiet_until:  # Redis failed a moment ago: no request waits again
            if hit is not None:
                return hit[1]
            raise redis.ConnectionError("Redis failed a moment ago; not asked again yet")
        try:
            caller = self._lookup(write_key)
        except redis.RedisError:
            self._quiet_until = time.monotonic() + self.QUIET_SECONDS
            if hit is None:
                raise
            return hit[1]  # stale, until Redis answers again
        if caller is None:
            if len(self._misses) > 10000:  # a flood of made-up keys must not grow memory
                self._misses.clear()
            self._misses[write_key] = now + self._ttl
            self._by_key.pop(write_key, None)
        else:
            self._by_key[write_key] = (now + self._ttl, caller)
        return caller

    def _lookup(self, write_key: str) -> Caller | None:
        site_id = server_key_site(self._r, write_key)
        trusted = site_id is not None
        if not trusted:
            site_id = self._r.get(keyspace.write_key(hash_secret(write_key)))
        site = get_site(self._r, site_id) if site_id else None
        return Caller(site, trusted) if site is not None else None

    def any_allows_origin(self, origin: str) -> bool:
        """Return whether some site lists the Origin's domain (for CORS preflights)."""
        now = time.monotonic()
        if self._all[0] <= now:
            try:
                self._all = (now + self._ttl, list_sites(self._r))
            except redis.RedisError:
                if not self._all[1]:
                    raise
        return any(s.allows_origin(origin) for s in self._all[1])


def valid_write_key(write_key: str) -> bool:
    """Return whether a string can be a write or server key at all (ASCII, ≤ 100 chars)."""
    return bool(write_key) and len(write_key) <= 100 and write_key.isascii()
