"""The pull API for ad tools (partner keys): per-visitor lookups in OpenRTB form.

``GET /api/v1/lookup?uid=<dmp_uid cookie>`` or ``?email_sha256=<hex>`` answers the
segments shared with the partner that the person is in, as an OpenRTB 2.x ``user.data``
list: one object with dmp's own segment ids and, for segments mapped to the IAB Audience
Taxonomy 1.1, one with those ids and ``ext.segtax`` 4. A person who is unknown, or
without the ``ads`` consent, gets the same empty answer: a partner learns nothing.
"""

from __future__ import annotations

import re
import threading
import time

from flask import Blueprint, Response, current_app, json, request

from dmp import keyspace
from dmp.apikeys import partner_audiences
from dmp.deps import current_deps
from dmp.identity import EMAIL_SHA256, IdKind
from dmp.problems import Problem
from dmp.profiles import parse_consent_summary
from dmp.segmentstore import list_segments

bp = Blueprint("pull", __name__, url_prefix="/api/v1")

SEGTAX_IAB_AUDIENCE_1_1 = 4
CATALOGUE_SECONDS = 5.0  # segment names and IAB mappings cached per process this long
_UID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class _Catalogue:
    """Segment id -> (name, IAB ids), read from Redis at most every few seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expires = 0.0
        self._entries: dict[str, tuple[str, tuple[str, ...]]] = {}

    def get(self, r) -> dict[str, tuple[str, tuple[str, ...]]]:
        if time.monotonic() >= self._expires:
            with self._lock:
                if time.monotonic() >= self._expires:
                    self._entries = {
                        s.definition.id: (s.definition.name, s.definition.iab)
                        for s in list_segments(r)
                    }
                    self._expires = time.monotonic() + CATALOGUE_SECONDS
        return self._entries


def _catalogue() -> _Catalogue:
    return current_app.extensions.setdefault("dmp.catalogue", _Catalogue())


def _audiences() -> tuple[str, ...]:
    header = request.headers.get("Authorization", "")
    key = header[7:].strip() if header[:7].lower() == "bearer " else ""
    found = partner_audiences(current_deps().redis, key)
    if found is None:
        raise Problem(401, "Unauthorized", "send a partner key as 'Authorization: Bearer <key>'")
    return found


def _identifier_key() -> str:
    uid, hashed = request.args.get("uid"), request.args.get("email_sha256")
    if (uid is None) == (hashed is None):
        raise Problem(400, "Invalid parameter", "give exactly one of uid= or email_sha256=")
    if uid is not None:
        if not _UID.match(uid):
            raise Problem(400, "Invalid parameter", "uid= must be a dmp_uid cookie value")
        return keyspace.identifier(IdKind.UID.value, uid)
    if not _SHA256.match(hashed or ""):
        raise Problem(400, "Invalid parameter", "email_sha256= must be 64 hex digits")
    return keyspace.identifier(EMAIL_SHA256, hashed.lower())


def person_segments(r, id_key: str) -> set[str]:
    """Return the segments of the person an identifier key leads to (none without the
    ``ads`` consent or without a person)."""
    pid = r.get(id_key)
    for _ in range(32):  # merged persons lead on to the one they were merged into
        if not pid:
            return set()
        with r.pipeline(transaction=False) as pipe:
            pipe.hmget(keyspace.person(pid), "merged_into", "cs")
            pipe.smembers(keyspace.person(pid, "segments"))
            (merged_into, cs), segments = pipe.execute()
        if not merged_into:
            return segments if parse_consent_summary(cs).get("ads") else set()
        pid = merged_into
    return set()


@bp.get("/lookup")
def lookup() -> Response:
    """Answer the shared segments a visitor is in, as OpenRTB ``user.data``."""
    audiences = _audiences()
    id_key = _identifier_key()
    r = current_deps().redis
    found = sorted(person_segments(r, id_key).intersection(audiences))
    provider = current_deps().config.provider_domain or request.host.rsplit(":", 1)[0]
    data = []
    if found:
        names = _catalogue().get(r)
        own = [{"id": sid, "name": names[sid][0]} if sid in names else {"id": sid} for sid in found]
        data.append({"name": provider, "segment": own})
        iab = sorted({i for sid in found for i in names.get(sid, ("", ()))[1]}, key=int)
        if iab:
            data.append({"name": provider, "segment": [{"id": i} for i in iab],
                         "ext": {"segtax": SEGTAX_IAB_AUDIENCE_1_1}})  # fmt: skip
    body = json.dumps({"data": data}, separators=(",", ":"))
    return Response(body, mimetype="application/json", headers={"Cache-Control": "no-store"})
