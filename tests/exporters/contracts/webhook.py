"""A webhook receiver as ``exporters.webhook`` asks receivers to be, for its tests.

It implements the documented contract on its own (it shares no code with the sender):

- ``X-DMP-Signature: t=…,v1=…`` is HMAC-SHA256 of ``"<t>.<raw body>"``, compared in
  constant time; a missing, malformed or wrong signature is 401;
- a ``t`` more than :data:`TOLERANCE` seconds from the receiver's clock (either way) is
  401: a captured request replayed later;
- ``X-DMP-Delivery`` is required; a delivery id already applied is acknowledged (200,
  ``{"duplicate": true}``) and not applied again: a replay inside the window, or a
  retry whose answer got lost, changes nothing;
- the body must be JSON with the documented keys (422 otherwise); ``{"op": "test"}``
  is a ping; ``add`` and ``remove`` change the segment's rows by ``person_id``;
  ``replace`` batches of one session are staged and swapped in at ``last: true``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from typing import Any

from flask import Flask, Response, request

from tests.exporters.contracts.server import ContractServer

TOLERANCE = 300
KEYS = frozenset({"destination", "segment", "op", "batch", "last", "session", "total", "rows"})


def verified(secret: bytes, header: str, body: bytes, now: float) -> str | None:
    """Return why a signature header does not hold for a body (None when it does)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t, given = int(fields["t"]), fields["v1"]
    except (KeyError, ValueError):
        return "malformed signature"
    if abs(now - t) > TOLERANCE:
        return "timestamp outside the tolerance"
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, given) else "signature mismatch"


def answer(status: int, body: Any) -> Response:
    """Return a JSON answer."""
    return Response(json.dumps(body), status, content_type="application/json")


class Receiver:
    """An operator's webhook endpoint holding each segment's rows by person id."""

    def __init__(self, secret: bytes, path: str = "/hooks/dmp") -> None:
        self.secret = secret
        self.held: dict[str, dict[str, dict[str, Any]]] = {}  # segment -> person -> row
        self.staged: dict[str, dict[str, dict[str, Any]]] = {}  # replace session -> rows
        self.applied: list[str] = []  # delivery ids, in the order applied
        self.duplicates: list[str] = []  # delivery ids received again (not applied)
        self.rejected: list[str] = []  # why requests were turned away
        self.pings = 0
        self.lock = threading.Lock()
        self.app = Flask(__name__)
        self.app.add_url_rule(path, "hook", self._hook, methods=["POST"])
        self.server = ContractServer(self.app)
        self.path = path

    @property
    def url(self) -> str:
        """Return the URL to configure as the destination's ``url``."""
        return self.server.url + self.path

    def rows(self, segment: str) -> dict[str, dict[str, Any]]:
        """Return the rows a segment holds, by person id."""
        with self.lock:
            return dict(self.held.get(segment, {}))

    def _reject(self, status: int, why: str) -> Response:
        self.rejected.append(why)
        return answer(status, {"error": why})

    def _hook(self) -> Response:
        raw = request.get_data()
        why = verified(self.secret, request.headers.get("X-DMP-Signature", ""), raw, time.time())
        if why:
            return self._reject(401, why)
        delivery = request.headers.get("X-DMP-Delivery", "")
        if not delivery:
            return self._reject(400, "X-DMP-Delivery missing")
        if request.mimetype != "application/json":
            return self._reject(415, "not JSON")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._reject(400, "body is not JSON")
        if isinstance(body, dict) and body.get("op") == "test":
            self.pings += 1
            return answer(200, {"ok": True})
        if why := _shape_problem(body):
            return self._reject(422, why)
        with self.lock:
            if delivery in self.applied:
                self.duplicates.append(delivery)
                return answer(200, {"duplicate": True})
            self._apply(body)
            self.applied.append(delivery)
        return answer(200, {"ok": True})

    def _apply(self, body: dict[str, Any]) -> None:
        rows = {row["person_id"]: row for row in body["rows"]}
        if body["op"] == "replace":
            staged = self.staged.setdefault(body["session"], {})
            staged.update(rows)
            if body["last"]:
                self.held[body["segment"]] = self.staged.pop(body["session"])
            return
        held = self.held.setdefault(body["segment"], {})
        if body["op"] == "add":
            held.update(rows)
        else:
            for person in rows:
                held.pop(person, None)


def _shape_problem(body: Any) -> str | None:
    """Return what is wrong with a batch's body (None when it is as documented)."""
    if not isinstance(body, dict) or set(body) != KEYS:
        return "body keys are not the documented ones"
    if body["op"] not in ("add", "remove", "replace"):
        return "unknown op"
    if not isinstance(body["batch"], int) or not isinstance(body["last"], bool):
        return "batch must be a number, last a boolean"
    rows = body["rows"]
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("person_id"), str) for r in rows
    ):
        return "each row needs a person_id"
    return None
