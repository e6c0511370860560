"""Google's Data Manager API, the Customer Match part, as a contract server.

What it implements, as Google documents it (REST reference of ``audienceMembers.ingest``
and ``.remove``, the ``google/ads/datamanager/v1`` protos, the formatting and error
guides):

- ``POST /v1/audienceMembers:ingest`` and ``:remove``, JSON, ``Authorization: Bearer``
  (401 ``UNAUTHENTICATED`` otherwise; 403 ``PERMISSION_DENIED`` for an account the
  token's user cannot reach, directly or through ``loginAccount``);
- unknown fields are refused, as Google's JSON parser does (a remove has no ``consent``
  and no ``termsOfService``);
- ``destinations`` (1 to 10): ``operatingAccount{accountType, accountId}``,
  ``productDestinationId`` naming a user list of that account;
- ``audienceMembers`` (1 to 10,000), each ``userData.userIdentifiers`` (1 to 10), each
  exactly one of ``emailAddress``, ``phoneNumber`` (SHA-256 as ``encoding: HEX``; held
  to lowercase, stricter than Google, as dmp sends it) or ``address`` (hashed names, a
  plain ISO 3166-1 alpha-2 region code in capitals, a plain postal code);
- ingest needs ``termsOfService.customerMatchTermsOfServiceStatus: ACCEPTED``, and (what
  dmp promises, stricter than Google) each member's consent granted for both
  ``adUserData`` and ``adPersonalization``;
- the whole request is validated before anything is applied: any violation answers 400
  ``INVALID_ARGUMENT`` with ``ErrorInfo`` and ``BadRequest.fieldViolations`` naming the
  member (``audience_members.audience_members[i]…``) and Google's reason;
- ``validateOnly: true`` answers ``{}`` and changes nothing; otherwise ``{"requestId"}``.

A member is held as the set of its identifiers; a remove takes out the member with
exactly those identifiers (what dmp added), and one naming no held member is kept in
``unmatched`` for tests to see. Faults: :func:`exhausted` (429 ``RESOURCE_EXHAUSTED``)
and :func:`unavailable` (503).
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request

from tests.exporters.contracts.server import Fault

ACCOUNT = "1234567890"
USER_LIST = "555"
TOKEN = "ya29.test-access-token"
ACCOUNT_TYPES = {"GOOGLE_ADS", "DISPLAY_VIDEO_PARTNER", "DISPLAY_VIDEO_ADVERTISER", "DATA_PARTNER"}
INGEST_FIELDS = {"destinations", "audienceMembers", "consent", "validateOnly", "encoding"}
INGEST_FIELDS |= {"encryptionInfo", "termsOfService"}
REMOVE_FIELDS = {"destinations", "audienceMembers", "validateOnly", "encoding", "encryptionInfo"}
MEMBER_FIELDS = {"userData", "consent", "destinationReferences"}
GRANTED = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}
_HEX = re.compile(r"[0-9a-fA-F]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REGION = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True, slots=True)
class Ack:
    """One accepted request."""

    op: str  # "ingest" or "remove"
    account: str
    user_list: str
    members: int
    validate_only: bool


class DataManager:
    """The API's state: accounts with their user lists, and the members each holds."""

    def __init__(
        self, token: str = TOKEN, lists: dict[str, set[str]] | None = None, manager: str = ""
    ) -> None:
        self.token = token
        self.manager = manager  # a manager account whose user the token is, if any
        self.held: dict[tuple[str, str], set[frozenset[str]]] = {
            (account, user_list): set()
            for account, ids in (lists or {ACCOUNT: {USER_LIST}}).items()
            for user_list in ids
        }
        self.acknowledged: list[Ack] = []
        self.unmatched: list[frozenset[str]] = []
        self.lock = threading.Lock()
        self.app = Flask(__name__)
        self.app.post("/v1/audienceMembers:ingest", endpoint="ingest")(lambda: self.answer(False))
        self.app.post("/v1/audienceMembers:remove", endpoint="remove")(lambda: self.answer(True))

    def members(self, user_list: str = USER_LIST, account: str = ACCOUNT) -> set[frozenset[str]]:
        """Return the members a user list holds (each the set of its identifiers)."""
        with self.lock:
            return set(self.held[(account, user_list)])

    def answer(self, remove: bool) -> Response:
        """Answer an ingest or remove request."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        try:
            body = json.loads(request.get_data())
        except ValueError:
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        unknown = sorted(set(body) - (REMOVE_FIELDS if remove else INGEST_FIELDS))
        if unknown:
            return google_error(
                400,
                "INVALID_ARGUMENT",
                f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.',
            )
        problems: list[dict[str, str]] = []
        targets = self._destinations(body.get("destinations"), problems)
        if targets is None:
            return google_error(403, "PERMISSION_DENIED", "The caller does not have permission")
        problems += _envelope(body, remove)
        members = _members(body.get("audienceMembers"), not remove, problems)
        if problems:
            return google_error(
                400, "INVALID_ARGUMENT", "There was a problem with the request.", problems
            )
        return self._apply(remove, targets, members, body.get("validateOnly") is True)

    def _destinations(
        self, destinations: Any, problems: list[dict[str, str]]
    ) -> list[tuple[str, str]] | None:
        """Return the (account, user list) pairs named; None: an account out of reach."""
        if not isinstance(destinations, list) or not 1 <= len(destinations) <= 10:
            problems.append(_violation("destinations", "TOO_MANY_DESTINATIONS"))
            return []
        targets = []
        for i, destination in enumerate(destinations):
            field = f"destinations[{i}]"
            if not isinstance(destination, dict):
                problems.append(_violation(field, "INVALID_DESTINATION"))
                continue
            account = _account(destination.get("operatingAccount"))
            login = _account(destination["loginAccount"]) if "loginAccount" in destination else ""
            if not account or login is None:
                problems.append(_violation(field, "INVALID_DESTINATION"))
                continue
            if (login and login != self.manager) or all(a != account for a, _ in self.held):
                return None
            user_list = str(destination.get("productDestinationId", ""))
            if (account, user_list) not in self.held:
                problems.append(
                    _violation(f"{field}.product_destination_id", "INVALID_USER_LIST_ID")
                )
                continue
            targets.append((account, user_list))
        return targets

    def _apply(
        self, remove: bool, targets: list[tuple[str, str]], members: list[frozenset[str]], dry: bool
    ) -> Response:
        """Apply a valid request (unless validateOnly); answer as Google does."""
        op = "remove" if remove else "ingest"
        with self.lock:
            for account, user_list in targets:
                self.acknowledged.append(Ack(op, account, user_list, len(members), dry))
                if dry:
                    continue
                held = self.held[(account, user_list)]
                for member in members:
                    if not remove:
                        held.add(member)
                    elif member in held:
                        held.discard(member)
                    else:
                        self.unmatched.append(member)
        return _json({} if dry else {"requestId": str(uuid.uuid4())})


def _envelope(body: dict[str, Any], remove: bool) -> list[dict[str, str]]:
    """Return the violations of a request's own fields."""
    problems = []
    if body.get("encoding") != "HEX":
        problems.append(_violation("encoding", "REQUIRED_FIELD_MISSING", "HEX is what dmp sends"))
    terms = body.get("termsOfService") or {}
    if not remove and terms.get("customerMatchTermsOfServiceStatus") != "ACCEPTED":
        problems.append(_violation("terms_of_service", "TERMS_AND_CONDITIONS_NOT_SIGNED"))
    if "validateOnly" in body and not isinstance(body["validateOnly"], bool):
        problems.append(_violation("validate_only", "INVALID_FORMAT"))
    return problems


def _members(members: Any, ingest: bool, problems: list[dict[str, str]]) -> list[frozenset[str]]:
    """Return each member's identifier set, adding violations to ``problems``."""
    if not isinstance(members, list) or not members:
        problems.append(_violation("audience_members", "REQUIRED_FIELD_MISSING"))
        return []
    if len(members) > 10_000:
        problems.append(_violation("audience_members", "TOO_MANY_AUDIENCE_MEMBERS"))
        return []
    out = []
    for i, member in enumerate(members):
        field = f"audience_members.audience_members[{i}]"
        found = _member(member, ingest)
        if isinstance(found, tuple):
            problems.append(_violation(f"{field}{found[0]}", found[1], found[2]))
        else:
            out.append(found)
    return out


def _member(member: Any, ingest: bool) -> frozenset[str] | tuple[str, str, str]:
    """Return a member's identifiers, or (field suffix, reason, description)."""
    if not isinstance(member, dict) or set(member) - MEMBER_FIELDS:
        return "", "INVALID_AUDIENCE_MEMBER", "unknown field"
    if ingest and member.get("consent") != GRANTED:
        return ".consent", "INVALID_AUDIENCE_MEMBER", "dmp sends members with consent granted"
    ids = (member.get("userData") or {}).get("userIdentifiers")
    if not isinstance(ids, list) or not ids:
        return ".user_data", "REQUIRED_FIELD_MISSING", "userIdentifiers"
    if len(ids) > 10:
        return ".user_data", "TOO_MANY_USER_IDENTIFIERS", "at most 10"
    out = set()
    for identifier in ids:
        found = _identifier(identifier)
        if found.startswith("!"):
            reason, _, description = found[1:].partition(" ")
            return ".user_data.user_identifiers", reason, description
        out.add(found)
    return frozenset(out)


def _identifier(identifier: Any) -> str:
    """Return an identifier as held (``email:<hex>``…), or ``!REASON description``."""
    if not isinstance(identifier, dict) or len(identifier) != 1:
        return "!INVALID_FORMAT exactly one of emailAddress, phoneNumber, address"
    kind, value = next(iter(identifier.items()))
    if kind in ("emailAddress", "phoneNumber"):
        return _hashed(value) or f"{'email' if kind == 'emailAddress' else 'phone'}:{value}"
    if kind != "address" or not isinstance(value, dict):
        return f"!INVALID_FORMAT unknown identifier {kind}"
    if set(value) != {"givenName", "familyName", "regionCode", "postalCode"}:
        return "!REQUIRED_FIELD_MISSING address needs givenName, familyName, regionCode, postalCode"
    bad = _hashed(value["givenName"]) or _hashed(value["familyName"])
    if bad:
        return bad
    if not isinstance(value["regionCode"], str) or not _REGION.fullmatch(value["regionCode"]):
        return "!INVALID_FORMAT regionCode is an ISO 3166-1 alpha-2 code, not hashed"
    postal = value["postalCode"]
    if not isinstance(postal, str) or not postal.strip() or _SHA256.fullmatch(postal):
        return "!INVALID_POSTAL_CODE postalCode is sent plain"
    parts = (value["givenName"], value["familyName"], value["regionCode"], postal)
    return "address:" + "|".join(parts)


def _hashed(value: Any) -> str:
    """Return '' for a SHA-256 in lowercase hex, else why it is not one."""
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        return "!INVALID_HEX_ENCODING The value is not hex encoded."
    if not _SHA256.fullmatch(value):
        return "!INVALID_SHA256_FORMAT The value is not a SHA-256 hash in lowercase hex."
    return ""


def _account(account: Any) -> str | None:
    """Return a ProductAccount's id (None: malformed)."""
    if not isinstance(account, dict) or account.get("accountType") not in ACCOUNT_TYPES:
        return None
    number = account.get("accountId")
    return number if isinstance(number, str) and number.isdigit() else None


def _violation(field: str, reason: str, description: str = "") -> dict[str, str]:
    """Return a BadRequest field violation."""
    return {
        "field": field,
        "reason": reason,
        **({"description": description} if description else {}),
    }


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def google_error(
    code: int,
    status: str,
    message: str,
    violations: list[dict[str, str]] | None = None,
    retry_delay: str = "",
) -> Response:
    """Return a google.rpc.Status error answer as the REST API gives it."""
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": status,
            "domain": "datamanager.googleapis.com",
        }
    ]
    if violations:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}
        )
    if retry_delay:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    error = {"code": code, "message": message, "status": status, "details": details}
    return _json({"error": error}, code)


def exhausted(retry_delay: str = "") -> Fault:
    """Return a fault answering 429 RESOURCE_EXHAUSTED (with RetryInfo if given)."""
    return lambda: google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Resource has been exhausted (e.g. check quota).",
        retry_delay=retry_delay,
    )


def unavailable() -> Fault:
    """Return a fault answering 503 UNAVAILABLE."""
    return lambda: google_error(503, "UNAVAILABLE", "The service is currently unavailable.")
