"""CleverReach's REST API v3 (groups and receivers) as a contract server.

Documented behaviours it implements (rest.cleverreach.com/explorer/v3 and CleverReach's
own integration cores):

- auth: ``Authorization: Bearer <token>``; otherwise 401
  ``{"error": {"code": 401, "message": "Unauthorized: invalid token"}}`` (every error
  has that shape);
- ``GET groups.json/{id}``, ``GET debug/whoami.json``;
- ``GET groups.json/{id}/receivers/{email}``: the receiver (``activated``,
  ``registered``, ``deactivated`` as Unix timestamps, 0 when not; ``source``,
  ``global_attributes``, ``tags``) or 404 "Not Found: invalid receiver";
- ``POST groups.json/{id}/receivers/upsertplus``: a JSON array of at most 1,000
  receivers (more: 413), documented fields only, global attributes the account defines;
  a new receiver without ``activated`` is activated at once (so a client must send
  ``activated: 0`` for double opt-in); an invalid address is skipped; the answer is the
  array of receivers upserted. A write that would re-activate a deactivated receiver
  (``activated`` > 0 or ``deactivated: 0``) is recorded in ``reactivated``;
- ``DELETE groups.json/{id}/receivers/{email}``: ``true``; deleting a deactivated
  receiver (losing its unsubscribe) is recorded in ``unsubscribes_lost``;
- :func:`throttled` and :func:`outage` answer 429 and 5xx in the same error shape.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

from flask import Flask, Response, request

from tests.exporters.contracts.server import ContractServer, Fault

UPSERT_LIMIT = 1000
GLOBALS = frozenset({"firstname", "lastname", "company", "country", "salutation", "city"})
RECEIVER_FIELDS = frozenset(
    {"email", "activated", "registered", "deactivated", "source", "global_attributes"}
    | {"attributes", "tags", "orders"}
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def answer(status: int, body: Any) -> Response:
    """Return a JSON answer."""
    return Response(json.dumps(body), status, content_type="application/json")


def error(status: int, message: str) -> Response:
    """Return an error in CleverReach's shape."""
    return answer(status, {"error": {"code": status, "message": message}})


def throttled() -> Fault:
    """Return a fault: 429 Too Many Requests."""
    return lambda: error(429, "Too Many Requests")


def outage(status: int = 500) -> Fault:
    """Return a fault: a server error."""
    return lambda: error(status, "Internal Server Error")


class CleverReach:
    """A CleverReach account's receiver groups behind its API, on a real socket."""

    def __init__(self, token: str, groups: dict[int, str] | None = None) -> None:
        self.token = token
        self.groups = dict(groups or {1158984: "Webinar leads"})
        self.receivers: dict[int, dict[str, dict[str, Any]]] = {g: {} for g in self.groups}
        self.reactivated: list[str] = []  # writes re-activating a deactivated receiver
        self.unsubscribes_lost: list[str] = []  # deactivated receivers deleted
        self.lock = threading.Lock()
        self.app = Flask(__name__)
        self._routes()
        self.server = ContractServer(self.app)

    def add_receiver(self, group: int, email: str, *, active: bool = True) -> None:
        """Hold a receiver who signed up elsewhere (a form), active or pending DOI."""
        now = int(time.time())
        with self.lock:
            self.receivers[group][email] = _receiver(email, now, now if active else 0, "form")

    def unsubscribe(self, group: int, email: str) -> None:
        """Deactivate a receiver, as its unsubscribe link does."""
        with self.lock:
            held = self.receivers[group][email]
            held["activated"], held["deactivated"] = 0, int(time.time())

    def receiver(self, group: int, email: str) -> dict[str, Any] | None:
        """Return a copy of a receiver as the group holds it (None if absent)."""
        with self.lock:
            held = self.receivers[group].get(email)
            return json.loads(json.dumps(held)) if held else None

    def active(self, group: int) -> set[str]:
        """Return the emails of the group's active receivers."""
        with self.lock:
            held = self.receivers[group].items()
            return {e for e, r in held if r["activated"] and not r["deactivated"]}

    def _routes(self) -> None:
        add = self.app.add_url_rule
        add("/v3/debug/whoami.json", "whoami", self._whoami)
        add("/v3/groups.json/<int:group>", "group", self._group)
        path = "/v3/groups.json/<int:group>/receivers/<path:pool_id>"
        add(path, "receiver", self._receiver, methods=["GET", "DELETE"])
        upsert = "/v3/groups.json/<int:group>/receivers/upsertplus"
        add(upsert, "upsertplus", self._upsertplus, methods=["POST"])

    def _refused(self, group: int | None = None) -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return error(401, "Unauthorized: invalid token")
        if group is not None and group not in self.groups:
            return error(404, "Not Found: invalid group")
        return None

    def _whoami(self) -> Response:
        if refused := self._refused():
            return refused
        return answer(200, {"id": 271828, "login": "owner", "company": "Beispiel GmbH"})

    def _group(self, group: int) -> Response:
        if refused := self._refused(group):
            return refused
        count = len(self.receivers[group])
        return answer(200, {"id": group, "name": self.groups[group], "receiver_count": count})

    def _receiver(self, group: int, pool_id: str) -> Response:
        if refused := self._refused(group):
            return refused
        with self.lock:
            held = self.receivers[group].get(pool_id.lower())
            if held is None:
                return error(404, "Not Found: invalid receiver")
            if request.method == "GET":
                return answer(200, held)
            if held["deactivated"]:
                self.unsubscribes_lost.append(held["email"])
            del self.receivers[group][held["email"]]
        return answer(200, True)

    def _upsertplus(self, group: int) -> Response:
        if refused := self._refused(group):
            return refused
        body = request.get_json(silent=True)
        if not isinstance(body, list) or not body:
            return error(400, "Bad Request: expected a list of receivers")
        if len(body) > UPSERT_LIMIT:
            return error(413, f"Request Entity Too Large: at most {UPSERT_LIMIT} receivers")
        for item in body:
            if problem := _receiver_problem(item):
                return error(400, f"Bad Request: {problem}")
        with self.lock:
            done = [self._upsert(group, item) for item in body if _EMAIL.match(item["email"])]
        return answer(200, done)

    def _upsert(self, group: int, item: dict[str, Any]) -> dict[str, Any]:
        email, now = item["email"].lower(), int(time.time())
        held = self.receivers[group].get(email)
        if held is None:
            registered = item.get("registered", now)
            held = _receiver(email, registered, item.get("activated", now), item.get("source", ""))
            self.receivers[group][email] = held
        elif held["deactivated"] and (item.get("activated") or item.get("deactivated") == 0):
            self.reactivated.append(email)
            held["activated"], held["deactivated"] = item.get("activated") or now, 0
        elif "activated" in item:
            held["activated"] = item["activated"]
        held["global_attributes"].update(item.get("global_attributes", {}))
        held["source"] = item.get("source", held["source"])
        held["tags"] = sorted(set(held["tags"]) | set(item.get("tags", ())))
        return dict(held)


def _receiver(email: str, registered: int, activated: int, source: str) -> dict[str, Any]:
    return {
        "id": abs(hash(email)) % 10**9,
        "email": email,
        "activated": activated,
        "registered": registered,
        "deactivated": 0,
        "source": source,
        "global_attributes": {},
        "attributes": {},
        "tags": [],
    }


def _receiver_problem(item: Any) -> str | None:
    """Return why CleverReach would refuse one receiver of an upsert (None if fine)."""
    if not isinstance(item, dict) or not isinstance(item.get("email"), str):
        return "each receiver needs an email"
    unknown = sorted(set(item) - RECEIVER_FIELDS)
    if unknown:
        return f"unknown field {unknown[0]}"
    for stamp in ("activated", "registered", "deactivated"):
        if stamp in item and (not isinstance(item[stamp], int) or item[stamp] < 0):
            return f"{stamp} must be a Unix timestamp"
    attributes = item.get("global_attributes", {})
    if not isinstance(attributes, dict) or set(attributes) - GLOBALS:
        return "invalid global attribute"
    tags = item.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return "tags must be a list of strings"
    return None
