"""LinkedIn's Marketing API, the DMP segment part, as a contract server.

What it implements, as LinkedIn documents it ("DMP Segment Users", "DMP Segments", the
versioning and rate-limit pages):

- ``Authorization: Bearer`` (401 ``INVALID_ACCESS_TOKEN`` otherwise), ``LinkedIn-Version``
  (400 ``VERSION_MISSING`` without it, 426 ``NONEXISTENT_VERSION`` for a month it does
  not serve), ``X-Restli-Protocol-Version: 2.0.0``;
- ``POST /rest/dmpSegments/{id}/users`` with ``X-RestLi-Method: BATCH_CREATE`` and
  ``{"elements": [...]}`` (1 to 5,000): each element an ``action`` (ADD or REMOVE) and
  ``userIds`` (``SHA256_EMAIL``: 64-character lowercase hex). Elements are validated one
  by one (versions from 202502): the answer is 200 with ``elements[i].status``, 201 for
  each taken and 400 with its ``error`` for each refused; adding a held id or removing
  an absent one is a 201 too;
- 600 requests a minute per token on ``/users``: beyond, 429 ``TOO_MANY_REQUESTS``;
- ``GET /rest/dmpSegments/{id}``: the segment with ``type``, ``inputCount`` and its
  LINKEDIN destination's ``status``, ``audienceSize`` and ``matchedCount`` (every id
  counts as matched here);
- unknown segments answer 404; errors are ``{"status", "serviceErrorCode", "code",
  "message"}``.

Faults: :func:`throttled` (429) and :func:`unavailable` (503). ``arrivals`` keeps when
each ``/users`` request came in (``time.monotonic``), for pacing tests.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request

from tests.exporters.contracts.server import Fault

TOKEN = "AQX-linkedin-test-token"
SEGMENT = "10804"
VERSIONS = ("202601", "202602", "202603", "202604", "202605", "202606")  # served months
MAX_ELEMENTS = 5_000
ID_TYPES = {
    "SHA256_EMAIL": re.compile(r"[0-9a-f]{64}"),
    "SHA512_EMAIL": re.compile(r"[0-9a-f]{128}"),
}
ELEMENT_FIELDS = {"action", "userIds", "firstName", "lastName", "title", "company", "country"}


@dataclass(slots=True)
class DmpSegment:
    """One DMP segment and the hashed ids it holds."""

    name: str
    type: str = "USER"
    members: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Ack:
    """One answered BATCH_CREATE: what it took."""

    segment: str
    added: int
    removed: int
    refused: int


class DmpApi:
    """The API's state: DMP segments, their members, the requests taken."""

    def __init__(self, token: str = TOKEN, per_minute: int = 600) -> None:
        self.token = token
        self.per_minute = per_minute
        self.segments: dict[str, DmpSegment] = {SEGMENT: DmpSegment("dmp leads")}
        self.acknowledged: list[Ack] = []
        self.arrivals: list[float] = []
        self.recent: deque[float] = deque()
        self.lock = threading.Lock()
        self.app = Flask(__name__)
        self.app.post("/rest/dmpSegments/<sid>/users", endpoint="users")(self.users)
        self.app.get("/rest/dmpSegments/<sid>", endpoint="segment")(self.segment)

    def members(self, segment: str = SEGMENT) -> set[str]:
        """Return the hashed ids a segment holds."""
        with self.lock:
            return set(self.segments[segment].members)

    def users(self, sid: str) -> Response:
        """Answer a BATCH_CREATE of segment users."""
        refused = self._refusal() or self._throttle()
        if refused:
            return refused
        if request.headers.get("X-RestLi-Method") != "BATCH_CREATE":
            return linkedin_error(400, "INVALID_METHOD", "A batch of elements needs BATCH_CREATE")
        segment = self.segments.get(sid)
        if segment is None:
            return linkedin_error(404, "NOT_FOUND", f"DmpSegment {sid} does not exist")
        if segment.type != "USER":
            return linkedin_error(400, "INVALID_SEGMENT_TYPE", "Users go to USER segments")
        try:
            elements = json.loads(request.get_data())["elements"]
        except (ValueError, KeyError, TypeError):
            return linkedin_error(400, "INVALID_BODY", 'The body must be {"elements": [...]}')
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ELEMENTS:
            return linkedin_error(400, "INVALID_BATCH_SIZE", f"1 to {MAX_ELEMENTS} elements")
        return _json({"elements": self._apply(sid, segment, elements)})

    def segment(self, sid: str) -> Response:
        """Answer a DMP segment's metadata."""
        refused = self._refusal()
        if refused:
            return refused
        with self.lock:
            segment = self.segments.get(sid)
            if segment is None:
                return linkedin_error(404, "NOT_FOUND", f"DmpSegment {sid} does not exist")
            size = len(segment.members)
            linkedin = {"destination": "LINKEDIN", "status": "READY" if size else "BUILDING"}
            linkedin |= {"audienceSize": size, "matchedCount": size}
            body = {"id": int(sid), "name": segment.name, "type": segment.type}
            body |= {"inputCount": size, "destinations": [linkedin]}
        return _json(body)

    def _apply(self, sid: str, segment: DmpSegment, elements: list[Any]) -> list[dict[str, Any]]:
        """Apply each valid element; return the per-element results."""
        results, added, removed = [], 0, 0
        with self.lock:
            for element in elements:
                problem = _invalid(element)
                if problem:
                    error = {"status": 400, "code": "INVALID_VALUE", "message": problem}
                    results.append({"status": 400, "error": error})
                    continue
                for user in element["userIds"]:
                    if element["action"] == "ADD":
                        segment.members.add(user["idValue"])
                    else:
                        segment.members.discard(user["idValue"])
                added += element["action"] == "ADD"
                removed += element["action"] == "REMOVE"
                results.append({"status": 201})
            refused = len(elements) - added - removed
            self.acknowledged.append(Ack(sid, added, removed, refused))
        return results

    def _refusal(self) -> Response | None:
        """Return the answer to a request without valid credentials or headers."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return linkedin_error(401, "INVALID_ACCESS_TOKEN", "Invalid access token", 65600)
        version = request.headers.get("LinkedIn-Version")
        if not version:
            return linkedin_error(
                400,
                "VERSION_MISSING",
                "A version must be present. Please "
                "specify a version by adding the LinkedIn-Version header.",
            )
        if version not in VERSIONS:
            return linkedin_error(
                426, "NONEXISTENT_VERSION", f"Requested version {version} is not active"
            )
        if request.headers.get("X-Restli-Protocol-Version") != "2.0.0":
            return linkedin_error(400, "INVALID_PROTOCOL", "X-Restli-Protocol-Version: 2.0.0")
        return None

    def _throttle(self) -> Response | None:
        """Return a 429 past the per-minute limit; note the request's arrival."""
        now = time.monotonic()
        with self.lock:
            self.arrivals.append(now)
            while self.recent and self.recent[0] <= now - 60:
                self.recent.popleft()
            if len(self.recent) >= self.per_minute:
                return linkedin_error(
                    429,
                    "TOO_MANY_REQUESTS",
                    "Resource level throttle "
                    "APPLICATION MINUTE limit for calls to this resource is "
                    "reached.",
                    101,
                )
            self.recent.append(now)
        return None


def _invalid(element: Any) -> str:
    """Return why an element is refused ('' when it is valid)."""
    if not isinstance(element, dict) or set(element) - ELEMENT_FIELDS:
        return "unknown field in element"
    if element.get("action") not in ("ADD", "REMOVE"):
        return "action must be ADD or REMOVE"
    users = element.get("userIds")
    if not isinstance(users, list) or not users:
        return "userIds must hold at least one id"
    for user in users:
        if not isinstance(user, dict) or set(user) != {"idType", "idValue"}:
            return "a userId is {idType, idValue}"
        pattern = ID_TYPES.get(user["idType"])
        if pattern is None:
            return f"unsupported idType {user['idType']}"
        if not isinstance(user["idValue"], str) or not pattern.fullmatch(user["idValue"]):
            return f"idValue is no {user['idType']} (lowercase hex)"
    return ""


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def linkedin_error(status: int, code: str, message: str, service_code: int = 100) -> Response:
    """Return an error answer as LinkedIn's REST API gives it."""
    body = {"status": status, "serviceErrorCode": service_code, "code": code, "message": message}
    return _json(body, status)


def throttled() -> Fault:
    """Return a fault answering 429 as LinkedIn throttles."""
    return lambda: linkedin_error(
        429,
        "TOO_MANY_REQUESTS",
        "Resource level throttle APPLICATION MINUTE limit for calls to this resource is reached.",
        101,
    )


def unavailable() -> Fault:
    """Return a fault answering 503."""
    return lambda: linkedin_error(503, "SERVICE_UNAVAILABLE", "Service Unavailable", 0)
