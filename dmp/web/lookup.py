"""The pull API for ad tools (partner keys): per-visitor lookups in OpenRTB form.

``GET /api/v1/lookup?uid=<dmp_uid cookie>`` or ``?email_sha256=<hex>`` answers the
segments shared with the partner that the person is in, as an OpenRTB 2.x ``user.data``
list: one object with dmp's own segment ids and, for segments mapped to the IAB Audience
Taxonomy 1.1, one with those ids and ``ext.segtax`` 4. A person who is unknown, or
without the ``ads`` consent, gets the same empty answer: a partner learns nothing.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, NamedTuple

import redis

from dmp.access.apikeys import Scope, check_key, hash_secret
from dmp.config import Config
from dmp.membership.definitions import list_segments
from dmp.people import consents as consent_rules
from dmp.people.identity import EMAIL_SHA256, Identifier, IdKind
from dmp.records import Category
from dmp.storage import keyspace
from dmp.storage.bulk import Bulk
from dmp.storage.outage import Outage
from dmp.web.auth import environ_token
from dmp.web.deps import Deps
from dmp.web.params import BadQuery, Param, query_args
from dmp.web.problems import PRIVATE, Problem, unavailable
from dmp.web.schema import ListOf, Obj, Text
from dmp.web.spec import BAD_PARAMETER, NO_KEY, UNAVAILABLE, Operation, Reply

log = logging.getLogger(__name__)
_OUTAGE = Outage(log, "Redis (lookups answer 503)")

PATH = "/api/v1/lookup"
HEADERS = [("Content-Type", "application/json"), *PRIVATE.items()]
SEGTAX_IAB_AUDIENCE_1_1 = 4
CATALOGUE_SECONDS = 5.0  # segments' IAB mappings cached per process this long
# Whole values only (fullmatch: "$" would let a trailing newline through).
_UID = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")

# The lookup's parameters and answer, for the OpenAPI document (read above without Flask).
_SEGMENTS = ListOf(Obj({"id": Text()}, required=("id",)))
OPERATION = Operation(
    "Return the shared segments a visitor is in, as OpenRTB user.data",
    "lookup",
    {
        200: Reply(
            "One object of dmp's segment ids and, for those mapped to the IAB Audience "
            "Taxonomy 1.1, one with those ids and ext.segtax 4; empty for anyone unknown "
            "or without the ads consent.",
            schema=Obj(
                {
                    "data": ListOf(
                        Obj(
                            {"name": Text(), "segment": _SEGMENTS, "ext": Obj()},
                            required=("name", "segment"),
                        )
                    )
                },
                required=("data",),
            ),
        ),
        400: BAD_PARAMETER,
        401: NO_KEY,
        503: UNAVAILABLE,
    },
    params=(
        Param("uid", Text(pattern=_UID.pattern), description="A dmp_uid cookie."),
        Param(
            "email_sha256",
            Text(pattern=_SHA256.pattern),
            description="The SHA-256 (hex) of a normalised email address.",
        ),
    ),
    security=("partnerKey",),
    description="Give exactly one of uid and email_sha256. Served before Flask, for speed.",
)


class Catalogue:
    """Segment id -> its IAB Audience Taxonomy ids, read from Redis every few seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expires = 0.0
        self._entries: dict[str, tuple[str, ...]] = {}

    def get(self, r) -> dict[str, tuple[str, ...]]:
        if time.monotonic() >= self._expires:
            with self._lock:
                if time.monotonic() >= self._expires:
                    self._entries = {s.definition.id: s.definition.iab for s in list_segments(r)}
                    self._expires = time.monotonic() + CATALOGUE_SECONDS
        return self._entries


def _unauthorized() -> Problem:
    return Problem(401, "Unauthorized", "send a partner key as 'Authorization: Bearer <key>'")


class _Asked(NamedTuple):
    """The identifier a lookup asks about: its key, and the consent field that must say
    ``ads`` for it ('' for a hashed email: the owner's email decides, in the script)."""

    id_key: str
    consent_field: str


def _identifier_key(args: dict[str, str]) -> _Asked:
    uid, hashed = args.get("uid"), args.get("email_sha256")
    if (uid is None) == (hashed is None):
        raise Problem(400, "Invalid parameter", "give exactly one of uid= or email_sha256=")
    if uid is not None:
        if not _UID.fullmatch(uid):
            raise Problem(400, "Invalid parameter", "uid= must be a dmp_uid cookie value")
        ident = Identifier(IdKind.UID, uid)
        field = consent_rules.state_field(Category.ADS.value, ident)
        return _Asked(keyspace.identifier(IdKind.UID.value, uid), field)
    if not _SHA256.fullmatch(hashed or ""):
        raise Problem(400, "Invalid parameter", "email_sha256= must be 64 hex digits")
    return _Asked(keyspace.identifier(EMAIL_SHA256, hashed.lower()), "")


# A lookup in two round trips. The first asks for the key's scope and audiences and the
# identifier's person (two keys of two slots on a Redis Cluster: a Bulk sends each node its
# share at once). The second runs this script on that person's two keys, both declared
# and hash-tagged into one slot: the ads consent given for the identifier (the browser's
# for a cookie, the email's for a hashed email) and the person's segments, or the person
# it was merged into, whose keys the next call declares (a script never derives keys).
_PERSON = """
local found = redis.call('HMGET', KEYS[1], 'merged_into', 'email')
if found[1] then return {2, found[1]} end
local field = ARGV[1]
if field == '' then
  if not found[2] or found[2] == '' then return {0} end
  field = ARGV[2] .. found[2]
end
local state = redis.call('HGET', KEYS[1], field)
if not state or string.sub(state, 1, 1) ~= '1' then return {0} end
local out = {1}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[2])) do out[#out + 1] = sid end
return out
"""
MERGE_HOPS = 32  # a chain of merges longer than this is broken data: the person is unknown

_ADS_FOR_EMAIL = consent_rules.state_field(Category.ADS.value, Identifier(IdKind.EMAIL, ""))


def shared_segments(r: redis.Redis, key: str, asked: _Asked) -> list[str] | None:
    """Return the segments shared with a partner key that the person an identifier key
    leads to is in (none without the ``ads`` consent), or None if the key is no partner's."""
    global _script
    bulk = Bulk()
    bulk.add("HMGET", keyspace.api_key(hash_secret(key)), "scope", "audiences")
    bulk.add("GET", asked.id_key)
    (scope, audiences), pid = bulk.execute(r)
    if scope != Scope.PARTNER.value.encode():
        return None
    if _script is None:
        _script = r.register_script(_PERSON)  # EVALSHA, loaded again should Redis forget it
    for _ in range(MERGE_HOPS):
        if pid is None:
            return []
        pid = pid.decode() if isinstance(pid, bytes) else pid
        found = _script(
            keys=[keyspace.person(pid), keyspace.person(pid, "segments")],
            args=[asked.consent_field, _ADS_FOR_EMAIL],
            client=r,
        )
        if found[0] != 2:
            shared = set((audiences or b"").decode().split(","))
            return sorted(sid for sid in found[1:] if sid in shared)
        pid = found[1]
    return []


_script: Any = None


def lookup_body(
    r: redis.Redis, config: Config, catalogue: Catalogue, key: str, query: str, host: str
) -> bytes:
    """Return the lookup's JSON answer (Problem for a bad key or bad parameters)."""
    if not key or len(key) > 200 or not key.isascii():
        raise _unauthorized()
    try:
        asked = _identifier_key(query_args(query))
    except (BadQuery, Problem) as exc:
        if not check_key(r, key, Scope.PARTNER):  # a caller without a key learns nothing
            raise _unauthorized() from None
        if isinstance(exc, Problem):
            raise
        raise Problem(400, "Invalid parameter", str(exc)) from None
    found = shared_segments(r, key, asked)
    if found is None:
        raise _unauthorized()
    provider = config.provider_domain or host_name(host)
    data: list[dict] = []
    if found:
        # Ids only: segment names are the marketers' words, not the partner's business.
        data.append({"name": provider, "segment": [{"id": sid} for sid in found]})
        mapped = catalogue.get(r)
        iab = sorted({i for sid in found for i in mapped.get(sid, ())}, key=int)
        if iab:
            data.append(
                {
                    "name": provider,
                    "segment": [{"id": i} for i in iab],
                    "ext": {"segtax": SEGTAX_IAB_AUDIENCE_1_1},
                }
            )
    return json.dumps({"data": data}, separators=(",", ":")).encode()


class Answer(NamedTuple):
    """A lookup's HTTP answer."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def answer(
    r: redis.Redis, config: Config, catalogue: Catalogue, key: str, query: str, host: str
) -> Answer:
    """Return the answer to a lookup (``key`` the bearer token, ``query`` the raw query
    string, ``host`` the Host header): 200 with the JSON, else a problem+json."""
    try:
        body = lookup_body(r, config, catalogue, key, query, host)
    except Problem as exc:
        return problem_answer(exc)
    except redis.RedisError as exc:
        _OUTAGE.down(exc)  # one line per outage, not a traceback per lookup
        return problem_answer(unavailable())
    except Exception:  # Flask's handlers are not there to catch it: answer as they would
        log.exception("lookup failed")
        return problem_answer(Problem(500, "Internal error", "the lookup failed; it is logged"))
    _OUTAGE.up()
    return Answer(200, [*HEADERS, ("Content-Length", str(len(body)))], body)


def problem_answer(problem: Problem) -> Answer:
    """Return a problem as an answer (problem+json, as dmp.web.problems words it)."""
    response = problem.get_response()
    return Answer(response.status_code, list(response.headers.items()), response.get_data())


class LookupApp:
    """WSGI middleware answering ``GET /api/v1/lookup`` itself (an ad tool asks it on
    every bid: no Flask request, routing or response objects), the rest passed on."""

    def __init__(self, app: Callable[..., Iterable[bytes]], deps: Deps) -> None:
        self.app, self.deps, self.catalogue = app, deps, Catalogue()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if environ.get("PATH_INFO") != PATH or method not in ("GET", "HEAD"):
            return self.app(environ, start_response)  # Flask answers 405 for other methods
        status, headers, body = answer(
            self.deps.redis,
            self.deps.config,
            self.catalogue,
            environ_token(environ),
            environ.get("QUERY_STRING", ""),
            environ.get("HTTP_HOST", ""),
        )
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [body] if method == "GET" else []  # HEAD: the same answer without its body


def host_name(host: str) -> str:
    """Return a Host header's name without its port (``[::1]:8000`` is ``[::1]``)."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rsplit(":", 1)[0]
