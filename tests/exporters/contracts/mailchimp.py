"""A strict Mailchimp Marketing API v3 (one account, one audience), for the exporter's tests.

What it implements, as Mailchimp documents it (paths under ``/3.0``):

- Basic auth, any user name, the API key as password; otherwise 401 "API Key Missing" or
  "API Key Invalid". Every error is ``application/problem+json`` (type, title, status,
  detail, instance); a body that is not a JSON object is 400 "JSON Parse Error".
- At most 10 simultaneous connections per key: the 11th open request gets 429.
- ``GET /ping``; ``GET /lists/{list}`` (404 "Resource Not Found" for another list).
- ``PUT /lists/{list}/members/{hash}``: the hash must be the MD5 of the lowercase
  ``email_address``; statuses subscribed, pending, unsubscribed, cleaned, transactional;
  ``status_if_new`` applies to new members only (a new member needs it or ``status``);
  ``status: subscribed`` on an unsubscribed member, subscribed or pending on a cleaned one,
  and any upsert of a member under compliance review are 400 "Member In Compliance State"
  (``pending`` on an unsubscribed member is taken: Mailchimp mails them to confirm
  again); addresses that look fake (example.com …) are 400 "Invalid Resource"; merge
  fields must exist in the audience, and required ones must be given for a new member unless
  ``skip_merge_validation=true``; merge fields given are updated, others kept.
- ``POST /lists/{list}/members/{hash}/tags`` with ``{"tags": [{"name", "status":
  "active"|"inactive"}]}`` → 204 (404 for an unknown member; a new tag is created).
- Tags are static segments: ``GET /lists/{list}/segments`` (``type``, ``count`` ≤ 1000,
  ``offset``), ``POST /lists/{list}/segments`` (``name`` plus ``static_segment`` or
  ``options``; a taken name is 400), ``POST /lists/{list}/segments/{id}`` with
  ``members_to_add`` / ``members_to_remove`` (≤ 500 each, else 400): 200 with
  ``members_added``, ``members_removed``, ``total_*`` and per-address ``errors`` for
  addresses not in the audience (Mailchimp ignores them); 404 for an unknown segment.

Not implemented: the batch subscribe endpoint (``POST /lists/{list}``), which dmp does not
use, and the ``/batches`` API.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from tests.exporters.contracts.server import ContractServer, Fault

ERRORS = "https://mailchimp.com/developer/marketing/docs/errors/"
CONNECTIONS = 10
BATCH = 500
PAGE = 1000
STATUSES = frozenset({"subscribed", "pending", "unsubscribed", "cleaned", "transactional"})
GONE = frozenset({"unsubscribed", "cleaned"})
FAKE_DOMAINS = frozenset({"example.com", "example.org", "example.net", "test.com"})
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", re.IGNORECASE)


@dataclass(slots=True)
class Member:
    """A member of the audience as Mailchimp keeps it."""

    email: str
    status: str
    merge_fields: dict[str, str] = field(default_factory=dict)
    in_review: bool = False  # compliance review: every upsert is refused


@dataclass(slots=True)
class Segment:
    """A static segment (a tag) and the hashes of the members holding it."""

    id: int
    name: str
    members: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class MemberView:
    """A member as a test reads it: status, active tags, merge fields."""

    email: str
    status: str
    tags: frozenset[str]
    merge_fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class Ack:
    """A change Mailchimp acknowledged: an upsert, or a tag batch (add or remove)."""

    op: str  # "upsert", "add" or "remove"
    tag: str  # '' for an upsert
    emails: tuple[str, ...]


def subscriber_hash(email: str) -> str:
    """Return the MD5 hex of an email's lowercase form (a member's id)."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def problem_response(status: int, title: str, detail: str, **extra: Any) -> Response:
    """Return an error in Mailchimp's ``application/problem+json`` form."""
    body = {"type": ERRORS, "title": title, "status": status, "detail": detail}
    body |= {"instance": str(uuid.uuid4()), **extra}
    return Response(json.dumps(body), status, content_type="application/problem+json")


def throttled(retry_after: str | None = "0") -> Fault:
    """Return a fault answering 429 Too Many Requests (with ``Retry-After`` if given)."""

    def answer() -> Response:
        response = problem_response(429, "Too Many Requests", "You have made too many requests.")
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    return answer


def outage(status: int = 500) -> Fault:
    """Return a fault answering a server error."""
    return lambda: problem_response(status, "Internal Server Error", "An unexpected error.")


class MailchimpServer(ContractServer):
    """Mailchimp on a local socket, with helpers to set up and read the audience."""

    def __init__(
        self,
        api_key: str,
        list_id: str = "a1b2c3d4e5",
        *,
        merge_fields: Iterable[str] = ("FNAME", "LNAME", "ADDRESS", "PHONE", "BIRTHDAY"),
        required: Iterable[str] = (),
        delay: float = 0.0,
    ) -> None:
        self.api_key, self.list_id, self.delay = api_key, list_id, delay
        self.merge_tags, self.required = frozenset(merge_fields), frozenset(required)
        self.members: dict[str, Member] = {}
        self.segments: dict[int, Segment] = {}
        self.acks: list[Ack] = []
        self.forgotten: set[str] = set()  # subscriber hashes deleted permanently
        self.last_id = 1000  # segment ids are never reused, as in Mailchimp
        self.state = threading.Lock()
        self.active = self.peak = self.rejected = 0
        app = Flask(f"mailchimp-{id(self)}")
        super().__init__(app)
        app.before_request(self._authorise)  # after the base's recording and faults
        self._routes(app)
        self._wsgi = app.wsgi_app
        app.wsgi_app = self._limit  # type: ignore[method-assign]

    # Helpers for tests ----------------------------------------------------------------

    def put_member(self, email: str, status: str, *, in_review: bool = False, **merge: str) -> None:
        """Make someone a member in a given status (as if they did it there)."""
        with self.state:
            self.members[subscriber_hash(email)] = Member(email, status, dict(merge), in_review)

    def forget_member(self, email: str) -> None:
        """Delete someone permanently (GDPR deletion in Mailchimp): never re-importable."""
        with self.state:
            self.members.pop(subscriber_hash(email), None)
            self.forgotten.add(subscriber_hash(email))

    def member(self, email: str) -> MemberView | None:
        """Return a member's status, active tags and merge fields (None if not a member)."""
        with self.state:
            found = self.members.get(subscriber_hash(email))
            if found is None:
                return None
            member = subscriber_hash(email)
            tags = frozenset(s.name for s in self.segments.values() if member in s.members)
            return MemberView(found.email, found.status, tags, dict(found.merge_fields))

    def holders(self, tag: str) -> set[str]:
        """Return the emails holding a tag actively."""
        with self.state:
            return {e for s in self.segments.values() if s.name == tag for e in self._of(s)}

    def acknowledged(self) -> list[Ack]:
        """Return the changes answered with success, in order."""
        with self.state:
            return list(self.acks)

    def create_tag(self, name: str) -> int:
        """Create a tag (as a marketer would in Mailchimp); return its id."""
        with self.state:
            return self._new_segment(name).id

    def delete_tag(self, name: str) -> None:
        """Delete a tag (as a marketer would in Mailchimp)."""
        with self.state:
            self.segments = {i: s for i, s in self.segments.items() if s.name != name}

    def _of(self, segment: Segment) -> set[str]:
        return {self.members[h].email for h in segment.members if h in self.members}

    def _new_segment(self, name: str) -> Segment:
        self.last_id += 1
        segment = Segment(self.last_id, name)
        self.segments[segment.id] = segment
        return segment

    # The platform -------------------------------------------------------------------

    def _limit(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Count open requests; answer 429 past Mailchimp's 10 simultaneous connections."""
        with self.state:
            self.active += 1
            self.peak = max(self.peak, self.active)
            over = self.active > CONNECTIONS
            self.rejected += over
        try:
            if over:
                detail = "You have exceeded the limit of 10 simultaneous connections."
                return problem_response(429, "Too Many Requests", detail)(environ, start_response)
            return self._wsgi(environ, start_response)
        finally:
            with self.state:
                self.active -= 1

    def _authorise(self) -> Response | None:
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return problem_response(
                401, "API Key Missing", "Your request did not include an API key."
            )
        if auth.password != self.api_key:
            detail = (
                "Your API key may be invalid, or you've attempted to access the wrong datacenter."
            )
            return problem_response(401, "API Key Invalid", detail)
        return None

    def _routes(self, app: Flask) -> None:
        app.add_url_rule("/3.0/ping", view_func=self._ping)
        app.add_url_rule("/3.0/lists/<list_id>", view_func=self._list)
        members = "/3.0/lists/<list_id>/members/<member>"
        app.add_url_rule(members, view_func=self._upsert, methods=["PUT"])
        app.add_url_rule(f"{members}/tags", view_func=self._tags, methods=["POST"])
        segments = "/3.0/lists/<list_id>/segments"
        app.add_url_rule(segments, view_func=self._segments, methods=["GET"])
        app.add_url_rule(segments, view_func=self._create_segment, methods=["POST"])
        app.add_url_rule(
            f"{segments}/<int:segment_id>", view_func=self._modify_segment, methods=["POST"]
        )
        app.register_error_handler(HTTPException, self._http_error)

    def _http_error(self, error: HTTPException) -> Response:
        title = {404: "Resource Not Found", 405: "Method Not Allowed"}.get(error.code or 0)
        return problem_response(error.code or 500, title or str(error.name), str(error.description))

    def _ping(self) -> Response:
        return _json({"health_status": "Everything's Chimpy!"})

    def _list(self, list_id: str) -> Response:
        if (missing := self._no_list(list_id)) is not None:
            return missing
        with self.state:
            counts = [m.status for m in self.members.values()]
        stats = {
            "member_count": counts.count("subscribed"),
            "unsubscribe_count": counts.count("unsubscribed"),
            "cleaned_count": counts.count("cleaned"),
        }
        return _json({"id": list_id, "name": "dmp test audience", "stats": stats})

    def _upsert(self, list_id: str, member: str) -> Response:
        refused = self._no_list(list_id)
        refused = refused if refused is not None else self._bad_member(member)
        if refused is not None:
            return refused
        time.sleep(self.delay)  # a slow platform, so that concurrency shows
        with self.state:
            return self._apply_upsert(member)

    def _bad_member(self, member: str) -> Response | None:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _unparsable()
        email = body.get("email_address")
        if not isinstance(email, str) or not email:
            return _invalid("email_address", "This value should not be blank.")
        if subscriber_hash(email) != member:
            detail = "The subscriber hash in the path is not the MD5 of the email address."
            return problem_response(400, "Invalid Resource", detail)
        domain = email.rpartition("@")[2].lower()
        if not _EMAIL.fullmatch(email) or domain in FAKE_DOMAINS:
            detail = f"{email} looks fake or invalid, please enter a real email address."
            return problem_response(400, "Invalid Resource", detail)
        for key in ("status", "status_if_new"):
            if key in body and body[key] not in STATUSES:
                return _invalid(key, f"Value is not one of {sorted(STATUSES)}.")
        merge = body.get("merge_fields", {})
        if not isinstance(merge, dict) or any(t not in self.merge_tags for t in merge):
            unknown = sorted(set(merge) - self.merge_tags) if isinstance(merge, dict) else []
            return _merge_problem([(t, "This merge field does not exist.") for t in unknown])
        return None

    def _apply_upsert(self, member: str) -> Response:
        body = request.get_json()
        found, status = self.members.get(member), body.get("status")
        if member in self.forgotten:  # deleted for good there: only their own sign-up
            detail = (
                f"{body['email_address']} was permanently deleted and cannot be re-imported. "
                "The contact must re-subscribe to get back on the list."
            )
            return problem_response(400, "Forgotten Email Not Subscribed", detail)
        if found is None:
            skip = request.args.get("skip_merge_validation") == "true"
            missing = [] if skip else sorted(self.required - set(body.get("merge_fields", {})))
            if missing:
                return _merge_problem([(t, "Please enter a value") for t in missing])
            if not (status or body.get("status_if_new")):
                return _invalid("status_if_new", "A new member needs status_if_new or status.")
            found = Member(body["email_address"], status or body["status_if_new"])
            self.members[member] = found
        elif found.in_review or _resubscribes(found.status, status):
            detail = (
                f"{found.email} is in a compliance state due to unsubscribe, bounce, or "
                "compliance review and cannot be subscribed."
            )
            return problem_response(400, "Member In Compliance State", detail)
        elif status:
            found.status = status
        found.merge_fields.update(body.get("merge_fields", {}))
        self.acks.append(Ack("upsert", "", (found.email,)))
        return _json(self._member_json(member))

    def _tags(self, list_id: str, member: str) -> Response:
        if (missing := self._no_list(list_id)) is not None:
            return missing
        body = request.get_json(silent=True)
        tags = body.get("tags") if isinstance(body, dict) else None
        if not isinstance(tags, list) or not all(
            isinstance(t, dict) and t.get("name") and t.get("status") in ("active", "inactive")
            for t in tags
        ):
            return _invalid("tags", "Each tag needs a name and status active or inactive.")
        with self.state:
            if member not in self.members:
                return problem_response(404, "Resource Not Found", "The member was not found.")
            for tag in tags:
                named = [s for s in self.segments.values() if s.name == tag["name"]]
                segment = named[0] if named else self._new_segment(tag["name"])
                change = (
                    segment.members.add if tag["status"] == "active" else segment.members.discard
                )
                change(member)
        return Response(status=204)

    def _segments(self, list_id: str) -> Response:
        if (missing := self._no_list(list_id)) is not None:
            return missing
        count, offset = request.args.get("count", "10"), request.args.get("offset", "0")
        if not (count.isdigit() and offset.isdigit()) or int(count) > PAGE:
            return _invalid("count", f"count must be a number up to {PAGE}.")
        kind = request.args.get("type")
        with self.state:
            found = [s for s in self.segments.values() if kind in (None, "static")]
            page = found[int(offset) : int(offset) + int(count)]
            items = [self._segment_json(s) for s in page]
        return _json({"segments": items, "list_id": list_id, "total_items": len(found)})

    def _create_segment(self, list_id: str) -> Response:
        if (missing := self._no_list(list_id)) is not None:
            return missing
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _unparsable()
        name = body.get("name")
        if not isinstance(name, str) or not 0 < len(name) <= 100:
            return _invalid("name", "A name of 1 to 100 characters is required.")
        if ("static_segment" in body) == ("options" in body):
            detail = 'Must provide either an "options" field or a "static_segment" field'
            return problem_response(400, "Invalid Resource", detail)
        with self.state:
            if any(s.name.casefold() == name.casefold() for s in self.segments.values()):
                return problem_response(400, "Invalid Resource", "Tag already exists.")
            segment = self._new_segment(name)
            segment.members |= {subscriber_hash(e) for e in body.get("static_segment") or []}
            return _json(self._segment_json(segment))

    def _modify_segment(self, list_id: str, segment_id: int) -> Response:
        if (missing := self._no_list(list_id)) is not None:
            return missing
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _unparsable()
        adds, removes = body.get("members_to_add", []), body.get("members_to_remove", [])
        for key, emails in (("members_to_add", adds), ("members_to_remove", removes)):
            if not isinstance(emails, list) or len(emails) > BATCH:
                return _invalid(key, f"{key} takes a list of at most {BATCH} emails.")
        with self.state:
            segment = self.segments.get(segment_id)
            if segment is None:
                return problem_response(404, "Resource Not Found", "The segment was not found.")
            return _json(self._apply_segment(segment, adds, removes))

    def _apply_segment(self, segment: Segment, adds: list[str], removes: list[str]) -> dict:
        known = [e for e in adds + removes if subscriber_hash(e) in self.members]
        unknown = [e for e in adds + removes if subscriber_hash(e) not in self.members]
        added = [e for e in adds if e in known and subscriber_hash(e) not in segment.members]
        removed = [e for e in removes if e in known and subscriber_hash(e) in segment.members]
        segment.members |= {subscriber_hash(e) for e in adds if e in known}
        segment.members -= {subscriber_hash(e) for e in removes if e in known}
        for op, emails in (("add", adds), ("remove", removes)):
            if emails:
                self.acks.append(Ack(op, segment.name, tuple(emails)))
        error = {"email_addresses": unknown, "error": "Email addresses are not in the list."}
        return {
            "members_added": [self._member_json(subscriber_hash(e)) for e in added],
            "members_removed": [self._member_json(subscriber_hash(e)) for e in removed],
            "errors": [error] if unknown else [],
            "total_added": len(added),
            "total_removed": len(removed),
            "error_count": len(unknown),
        }

    def _no_list(self, list_id: str) -> Response | None:
        if list_id == self.list_id:
            return None
        return problem_response(
            404, "Resource Not Found", "The requested resource could not be found."
        )

    def _member_json(self, member: str) -> dict[str, Any]:
        found = self.members[member]
        tags = [{"id": s.id, "name": s.name} for s in self.segments.values() if member in s.members]
        return {
            "id": member,
            "email_address": found.email,
            "status": found.status,
            "merge_fields": dict(found.merge_fields),
            "tags_count": len(tags),
            "tags": tags,
            "list_id": self.list_id,
        }

    def _segment_json(self, segment: Segment) -> dict[str, Any]:
        return {
            "id": segment.id,
            "name": segment.name,
            "member_count": len(segment.members),
            "type": "static",
            "list_id": self.list_id,
        }


def _resubscribes(current: str, wanted: str | None) -> bool:
    """Return whether a status change is one Mailchimp refuses: subscribing someone who
    unsubscribed or bounced (an unsubscribed person may be sent a new confirmation mail:
    ``pending``)."""
    if current == "cleaned":
        return wanted in ("subscribed", "pending")
    return current == "unsubscribed" and wanted == "subscribed"


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), 200, content_type="application/json")


def _unparsable() -> Response:
    detail = "We encountered an unspecified JSON parsing error."
    return problem_response(400, "JSON Parse Error", detail)


def _invalid(name: str, message: str) -> Response:
    detail = "The resource submitted could not be validated. See the 'errors' array."
    errors = [{"field": name, "message": message}]
    return problem_response(400, "Invalid Resource", detail, errors=errors)


def _merge_problem(fields: list[tuple[str, str]]) -> Response:
    errors = [{"field": tag, "message": message} for tag, message in fields]
    return problem_response(
        400, "Invalid Resource", "Your merge fields were invalid.", errors=errors
    )
