"""Brevo's contacts API (v3) as a contract server, for the Brevo destination's tests.

Documented behaviours it implements (developers.brevo.com, the official SDKs' models):

- auth: header ``api-key``; a missing or unknown key is 401
  ``{"code": "unauthorized", "message": "Key not found"}``;
- errors are ``{"code": …, "message": …}`` with Brevo's codes (``invalid_parameter``,
  ``missing_parameter``, ``out_of_range``, ``duplicate_parameter``,
  ``document_not_found``, ``bad_request``, ``too_many_requests``);
- ``GET /contacts/{email}``: the contact (``emailBlacklisted``, ``listIds``,
  ``attributes``) or 404 "Contact does not exist";
- ``POST /contacts``: documented fields only; ``attributes`` must exist in the account
  (UPPERCASE names); an existing email without ``updateEnabled: true`` is 400
  ``duplicate_parameter``; created is 201 ``{"id"}``, updated 204;
  ``emailBlacklisted: false`` un-blacklists (re-subscribes) a contact, as Brevo does:
  the server records every such write in ``resubscribed``;
- ``POST /contacts/lists/{id}/contacts/add|remove``: ``emails`` (at most 150, else 400
  ``out_of_range``); 201 ``{"contacts": {"success": […], "failure": […]}}``, where a
  failure is an unknown contact or one already in (or out of) the list; when nothing
  succeeds, 400 "Contact already in list and/or does not exist" (or "already removed
  from list"); an unknown list is 404 "List ID does not exist";
- ``GET /account``, ``GET /contacts/lists/{id}``;
- every answer carries ``x-sib-ratelimit-limit|remaining|reset``; :func:`throttled`
  answers 429 with ``x-sib-ratelimit-reset`` (seconds until the window resets).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request

from tests.exporters.contracts.server import ContractServer, Fault

ATTRIBUTES = frozenset({"FIRSTNAME", "LASTNAME", "SMS", "EXT_ID"})  # the account's
CONTACT_FIELDS = frozenset(
    {"email", "ext_id", "attributes", "emailBlacklisted", "smsBlacklisted", "listIds"}
    | {"updateEnabled", "smtpBlacklistSender"}
)
LIST_LIMIT = 150
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class Held:
    """One contact as the Brevo account holds it."""

    id: int
    email: str
    attributes: dict[str, Any] = field(default_factory=dict)
    blacklisted: bool = False
    lists: set[int] = field(default_factory=set)


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    """Return a JSON answer (no body for None)."""
    text = "" if body is None else json.dumps(body)
    return Response(text, status, headers, content_type="application/json")


def error(status: int, code: str, message: str) -> Response:
    """Return an error in Brevo's shape."""
    return answer(status, {"code": code, "message": message})


def throttled(reset: int = 1) -> Fault:
    """Return a fault: 429 with the seconds until the rate-limit window resets."""
    headers = {
        "x-sib-ratelimit-limit": "10",
        "x-sib-ratelimit-remaining": "0",
        "x-sib-ratelimit-reset": str(reset),
    }
    body = {"code": "too_many_requests", "message": "The expected rate limit is exceeded."}
    return lambda: answer(429, body, headers)


def outage(status: int = 500) -> Fault:
    """Return a fault: a server error."""
    return lambda: error(status, "internal_error", "Internal server error")


class Brevo:
    """A Brevo account (contacts, lists) behind its API, served on a real socket."""

    def __init__(self, api_key: str, lists: dict[int, str] | None = None) -> None:
        self.api_key = api_key
        self.lists = dict(lists or {7: "Webinar leads"})
        self.contacts: dict[str, Held] = {}
        self.resubscribed: list[str] = []  # emails a client un-blacklisted (must stay empty)
        self.lock = threading.Lock()
        self.app = Flask(__name__)
        self._routes()
        self.app.after_request(_rate_headers)
        self.server = ContractServer(self.app)

    def add_contact(
        self, email: str, *, blacklisted: bool = False, lists: tuple[int, ...] = ()
    ) -> None:
        """Hold a contact created elsewhere (a form, a past import)."""
        with self.lock:
            held = Held(len(self.contacts) + 1, email.lower(), blacklisted=blacklisted)
            held.lists.update(lists)
            self.contacts[held.email] = held

    def unsubscribe(self, email: str) -> None:
        """Blacklist a contact, as its unsubscribe link does."""
        with self.lock:
            self.contacts[email.lower()].blacklisted = True

    def members(self, list_id: int) -> set[str]:
        """Return the emails in a list."""
        with self.lock:
            return {e for e, held in self.contacts.items() if list_id in held.lists}

    def attributes(self, email: str) -> dict[str, Any]:
        """Return a contact's attributes."""
        with self.lock:
            return dict(self.contacts[email.lower()].attributes)

    def _routes(self) -> None:
        add = self.app.add_url_rule
        add("/v3/account", "account", self._account)
        add("/v3/contacts/lists/<int:list_id>", "list", self._list)
        add("/v3/contacts/<path:identifier>", "contact", self._contact)
        add("/v3/contacts", "upsert", self._upsert, methods=["POST"])
        add("/v3/contacts/lists/<int:list_id>/contacts/<verb>", "members", self._members,
            methods=["POST"])  # fmt: skip

    def _refused(self) -> Response | None:
        if request.headers.get("api-key") != self.api_key:
            return error(401, "unauthorized", "Key not found")
        return None

    def _account(self) -> Response:
        if refused := self._refused():
            return refused
        body = {"email": "owner@example.com", "companyName": "Example GmbH", "plan": []}
        return answer(200, body)

    def _list(self, list_id: int) -> Response:
        if refused := self._refused():
            return refused
        if list_id not in self.lists:
            return error(404, "document_not_found", "List ID does not exist")
        count = len(self.members(list_id))
        return answer(200, {"id": list_id, "name": self.lists[list_id], "totalSubscribers": count})

    def _contact(self, identifier: str) -> Response:
        if refused := self._refused():
            return refused
        with self.lock:
            held = self.contacts.get(identifier.lower())
            if held is None:
                return error(404, "document_not_found", "Contact does not exist")
            body = {
                "id": held.id,
                "email": held.email,
                "emailBlacklisted": held.blacklisted,
                "smsBlacklisted": False,
                "listIds": sorted(held.lists),
                "attributes": dict(held.attributes),
            }
        return answer(200, body)

    def _upsert(self) -> Response:
        if refused := self._refused():
            return refused
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return error(400, "bad_request", "Input must be a valid JSON object")
        if problem := _contact_problem(body):
            return problem
        with self.lock:
            email = body["email"].lower()
            held = self.contacts.get(email)
            if held is not None and body.get("updateEnabled") is not True:
                message = "Unable to create contact, email is already associated with another"
                return error(400, "duplicate_parameter", f"{message} Contact")
            created = held is None
            if held is None:
                held = self.contacts[email] = Held(len(self.contacts) + 1, email)
            held.attributes.update(body.get("attributes") or {})
            held.lists.update(body.get("listIds") or ())
            if "emailBlacklisted" in body:
                if held.blacklisted and body["emailBlacklisted"] is False:
                    self.resubscribed.append(email)
                held.blacklisted = bool(body["emailBlacklisted"])
        return answer(201, {"id": held.id}) if created else answer(204)

    def _members(self, list_id: int, verb: str) -> Response:
        if refused := self._refused():
            return refused
        if verb not in ("add", "remove"):
            return error(404, "document_not_found", "Not found")
        if list_id not in self.lists:
            return error(404, "document_not_found", "List ID does not exist")
        body = request.get_json(silent=True)
        emails = body.get("emails") if isinstance(body, dict) else None
        if not isinstance(emails, list) or not emails:
            return error(400, "missing_parameter", "emails is missing")
        if len(emails) > LIST_LIMIT:
            return error(400, "out_of_range", f"You can pass a maximum of {LIST_LIMIT} emails")
        success, failure = self._change(list_id, emails, verb == "add")
        if not success:
            done = "already in list" if verb == "add" else "already removed from list"
            return error(400, "invalid_parameter", f"Contact {done} and/or does not exist")
        return answer(201, {"contacts": {"success": success, "failure": failure}})

    def _change(self, list_id: int, emails: list[Any], adding: bool) -> tuple[list, list]:
        success, failure = [], []
        with self.lock:
            for email in emails:
                held = self.contacts.get(str(email).lower())
                if held is None or (list_id in held.lists) == adding:
                    failure.append(email)
                    continue
                (held.lists.add if adding else held.lists.discard)(list_id)
                success.append(email)
        return success, failure


def _contact_problem(body: dict[str, Any]) -> Response | None:
    """Return Brevo's 400 for a contact body it would refuse (None if it is fine)."""
    unknown = sorted(set(body) - CONTACT_FIELDS)
    if unknown:
        return error(400, "invalid_parameter", f"Unknown parameter {unknown[0]}")
    email = body.get("email")
    if not isinstance(email, str) or not _EMAIL.match(email):
        return error(400, "invalid_parameter", "Invalid email address")
    attributes = body.get("attributes", {})
    if not isinstance(attributes, dict):
        return error(400, "invalid_parameter", "attributes should be an object")
    for name, value in attributes.items():
        if name not in ATTRIBUTES:
            return error(400, "invalid_parameter", f"Attribute {name} does not exist")
        if not isinstance(value, str | int | float | bool):
            return error(400, "invalid_parameter", f"Invalid value for attribute {name}")
    if "updateEnabled" in body and not isinstance(body["updateEnabled"], bool):
        return error(400, "invalid_parameter", "updateEnabled should be a boolean")
    return None


def _rate_headers(response: Response) -> Response:
    """Add Brevo's rate-limit headers to an answer that has none."""
    response.headers.setdefault("x-sib-ratelimit-limit", "10")
    response.headers.setdefault("x-sib-ratelimit-remaining", "9")
    response.headers.setdefault("x-sib-ratelimit-reset", "1")
    return response
