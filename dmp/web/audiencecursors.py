"""Cursors of the audience pull API: where a partner is, opaque to it and signed.

A cursor is the URL-safe base64 of a small JSON object, a dot, and the base64 of its
HMAC-SHA256 under a random secret of the installation (kept in Redis,
``keyspace.AUDIENCE_CURSOR_SECRET``). A partner cannot make one for another audience,
run or position, nor change one it was given: a cursor that does not verify is a 400.
It names the audience, the kind of identifier, the run the partner reaches when the
listing ends, the last person id of the listing served, and (for the changes feed) the
run the partner held before and where the consent re-check stands
(:mod:`dmp.web.audiencefeeds`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass

import redis

from dmp.storage import keyspace
from dmp.web.problems import Problem

VERSION = 1
# What a cursor looks like: base64url of the JSON, a dot, base64url of the 32-byte MAC.
PATTERN = r"[A-Za-z0-9_-]{1,1400}\.[A-Za-z0-9_-]{43}"
MAX_LENGTH = 1444
# The JSON members (short: a cursor travels in URLs and headers).
_NAMES = {
    "audience": "a",
    "kind": "k",
    "run": "r",
    "after": "p",
    "since_run": "s",
    "recheck": "w",
    "done": "d",
}


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a members listing, in a changes listing, or (``done``) the end of a
    listing: the state a partner holds, from which the changes feed goes on."""

    audience: str
    kind: str  # the identifier rows carry: uid | email_sha256
    run: str  # the run whose membership the partner holds when the listing ends
    after: str = ""  # the last person id of the listing served ('' at its start)
    since_run: str = ""  # a changes listing: the run the partner held before it
    recheck: str = ""  # the consent re-check's last person id in the audience
    done: bool = False  # the listing ended: pass it as the changes feed's ``since``


def installation_secret(r: redis.Redis) -> bytes:
    """Return the installation's cursor secret, made on first use."""
    r.set(keyspace.AUDIENCE_CURSOR_SECRET, secrets.token_hex(32), nx=True)
    return bytes.fromhex(r.get(keyspace.AUDIENCE_CURSOR_SECRET) or "")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


def encode_cursor(secret: bytes, cursor: Cursor) -> str:
    """Return the signed, opaque text of a cursor."""
    fields = {_NAMES[k]: v for k, v in asdict(cursor).items() if v or k == "run"}
    payload = json.dumps({"v": VERSION, **fields}, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def _invalid() -> Problem:
    return Problem(
        400, "Invalid cursor", "the cursor is not one this server gave (changed, or cut short)"
    )


def decode_cursor(secret: bytes, text: str) -> Cursor:
    """Return the cursor a text signed with ``secret`` holds (400 problem otherwise)."""
    body, _, mac = text.partition(".")
    try:
        payload, sent = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        raise _invalid() from None
    if not hmac.compare_digest(_mac(secret, payload), sent):
        raise _invalid()
    # Signed by us, so the JSON is ours; members left out are their defaults.
    data = json.loads(payload)
    if data.get("v") != VERSION:
        raise _invalid()
    return Cursor(**{name: data[short] for name, short in _NAMES.items() if short in data})
