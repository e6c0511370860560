"""Mailchimp (Marketing API v3): segment members upserted into one audience, each segment a tag.

A row is ``(email, status_if_new, first_name, last_name, company, job_title)``; the email is
the key, so a changed name is an upsert. ``status_if_new`` is ``subscribed`` when dmp holds
a confirmed double opt-in, else ``pending``: Mailchimp then sends its own confirmation mail
(German practice) before anyone gets a newsletter.

How it is sent, and why:

- Upsert: ``PUT /lists/{list}/members/{md5(lowercase email)}`` with ``email_address``,
  ``status_if_new`` and ``merge_fields``, never ``status``. Mailchimp applies
  ``status_if_new`` to new members only, so an existing member's status never changes:
  someone who unsubscribed or bounced (``cleaned``) there stays so, and the answer's
  ``status`` tells us. The batch subscribe endpoint (``POST /lists/{list}``) is not used:
  each of its members needs a ``status``, and ``update_existing`` applies that status to
  existing members (it would ask people who unsubscribed to confirm again); without
  ``update_existing`` it leaves existing members' names as they were.
- Tags: a Mailchimp tag is a static segment, so tags go 500 members a request through
  ``POST /lists/{list}/segments/{tag_id}`` (``members_to_add`` / ``members_to_remove``)
  rather than one ``POST …/members/{hash}/tags`` per member. The tag is found with
  ``GET /lists/{list}/segments?type=static`` (or created) once per destination object.
- Members Mailchimp has as ``unsubscribed`` or ``cleaned`` (or answers "Member In
  Compliance State" for, or "Forgotten Email Not Subscribed": deleted there for good)
  come back in ``Outcome.unsubscribed`` and are not tagged; other
  refusals of one member in ``Outcome.failed`` with Mailchimp's title and detail.
- REMOVE: the tag becomes inactive (removed from its static segment); the member stays in
  the audience: they left the segment, not the newsletter.
- Mailchimp allows 10 simultaneous connections per API key. Upserts run on ``connections``
  clients (default 4, at most 10), each with its own ``requests.Session`` and used by one
  thread at a time (a queue hands them out); the tag calls run on one of them while no
  upsert is in flight, so no more than ``connections`` requests are ever open at once.

Options: ``list_id`` (the audience id, required), ``api_key_env`` (the variable holding the
API key ``<key>-<dc>``), ``tag.<segment_id>`` (the segment's tag name; default the segment
id), ``merge.<column>`` (the merge tag a row column fills: ``merge.first_name`` FNAME,
``merge.last_name`` LNAME by default, ``merge.company`` and ``merge.job_title`` unset, as
Mailchimp audiences have no such fields unless one adds them; an empty value sends
nothing), ``skip_merge_validation`` (default ``true``: a contact without a name is still
added when the audience marks FNAME required), ``connections``, and ``exporters.http``'s
``base_url``, ``retry_*`` and ``timeout``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import Queue
from typing import Any, ClassVar

import requests

from dmp.membership.audience import Contact
from dmp.records import Category
from exporters.destination import Batch, Op, Outcome, Refused, Row, Settings
from exporters.http import Http, excerpt

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 10  # Mailchimp: simultaneous connections per API key
DEFAULT_CONNECTIONS = 4  # leaves room for other syncs and tools on the same key
PAGE = 1000  # the largest ``count`` Mailchimp pages by
TAG_LENGTH = 100  # the longest tag name Mailchimp takes
COMPLIANCE = "Member In Compliance State"  # the title of "unsubscribed or bounced here"
FORGOTTEN = "Forgotten Email Not Subscribed"  # deleted for good there (a GDPR deletion)
GONE = frozenset({"unsubscribed", "cleaned"})
MERGE_DEFAULTS = {"first_name": "FNAME", "last_name": "LNAME", "company": "", "job_title": ""}
_MERGE_TAG = re.compile(r"[A-Z0-9_]{1,10}")


@dataclass(frozen=True, slots=True)
class Upserted:
    """What Mailchimp made of one member's upsert."""

    gone: bool = False  # unsubscribed or cleaned there: not tagged, consent withdrawn in dmp
    problem: str = ""  # why Mailchimp refused the member ('' if it took them)


class MailchimpAudience:
    """One Mailchimp audience; each segment a tag on its members."""

    channel: ClassVar[Category] = Category.EMAIL
    columns: ClassVar[tuple[str, ...]] = (
        "email",
        "status_if_new",
        "first_name",
        "last_name",
        "company",
        "job_title",
    )
    key: ClassVar[int | None] = 0
    batch_size: ClassVar[int] = 500  # members_to_add / members_to_remove take 500 each
    replaces: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.list_id = settings.option("list_id")
        key = settings.secret("api_key_env")
        base = settings.option("base_url") or api_url(key, settings.name)
        self.clients = [
            Http(settings, base, auth=("anystring", key)) for _ in range(connections(settings))
        ]
        self.http = self.clients[0]  # for the calls made one at a time
        self.idle: Queue[Http] = Queue()
        for client in self.clients:
            self.idle.put(client)
        self.merge = {c: settings.option(f"merge.{c}", d) for c, d in MERGE_DEFAULTS.items()}
        self.skip_merge_validation = settings.option("skip_merge_validation", "true") != "false"
        self.tag_ids: dict[str, int] = {}

    @staticmethod
    def check(settings: Settings) -> list[str]:
        """Return what is wrong with the settings, one line each ([] when they will do)."""
        name, problems = settings.name, []
        for option, meaning in (("list_id", "the audience id"), ("api_key_env", "a variable")):
            if not settings.option(option):
                problems.append(f"{name}: option {option} ({meaning}) is not set")
        raw = settings.option("connections", str(DEFAULT_CONNECTIONS))
        if not (raw.isdigit() and 1 <= int(raw) <= MAX_CONNECTIONS):
            problems.append(f"{name}: connections must be 1 to {MAX_CONNECTIONS}, not {raw!r}")
        for column, default in MERGE_DEFAULTS.items():
            tag = settings.option(f"merge.{column}", default)
            if tag and not _MERGE_TAG.fullmatch(tag):
                problems.append(f"{name}: merge.{column} {tag!r} is not a merge tag (A-Z0-9_)")
        for segment in settings.segments:
            if len(tag_name(settings, segment)) > TAG_LENGTH:
                problems.append(f"{name}: the tag of {segment} is over {TAG_LENGTH} characters")
        return problems

    def encode(self, contacts: Sequence[Contact]) -> list[Row | None]:
        """Return each contact's row (None without an email)."""
        return [encode_contact(contact) for contact in contacts]

    def send(self, batch: Batch) -> Outcome:
        """Upsert and tag (ADD) or untag (REMOVE) a batch's members; return the refusals."""
        if not batch.rows:
            return Outcome()
        tag = tag_name(self.settings, batch.segment_id)
        if batch.op is Op.ADD:
            return self.add(tag, batch.rows)
        if batch.op is Op.REMOVE:
            errors = self.tag_members(tag, [row[0] for row in batch.rows], Op.REMOVE)
            if errors:  # not on the list (deleted there): they hold no tag either
                log.info("%s: %d members to untag were not in the audience", self.name, len(errors))
            return Outcome()
        raise Refused(f"{self.name}: Mailchimp takes no {batch.op.value} batches")

    def test(self) -> str:
        """Prove the API key (``GET /ping``) and the audience (``GET /lists/{list}``)."""
        ping = self.expect(self.http.request("GET", "/ping"), "ping")
        response = self.http.request("GET", f"/lists/{self.list_id}")
        if response.status_code == 404:
            raise Refused(f"{self.name}: this API key sees no audience {self.list_id!r}")
        audience = self.expect(response, "read the audience")
        count = (audience.get("stats") or {}).get("member_count", "?")
        return (
            f"API key accepted ({ping.get('health_status', 'ok')}); audience "
            f"{audience.get('name', '')!r} ({self.list_id}) has {count} subscribed members"
        )

    @property
    def name(self) -> str:
        """Return the destination's configured name."""
        return self.settings.name

    def add(self, tag: str, rows: Sequence[Row]) -> Outcome:
        """Upsert rows, tag those Mailchimp took, and say who was refused or is gone."""
        outcome, taken = Outcome(), []
        for i, answer in enumerate(self.upsert_all(rows)):
            if answer.gone:
                outcome.unsubscribed.append(i)
            elif answer.problem:
                outcome.failed[i] = answer.problem
            else:
                taken.append(i)
        if taken:
            errors = self.tag_members(tag, [rows[i][0] for i in taken], Op.ADD)
            for i in taken:
                if rows[i][0].lower() in errors:
                    outcome.failed[i] = errors[rows[i][0].lower()]
        return outcome

    def upsert_all(self, rows: Sequence[Row]) -> list[Upserted]:
        """Return Mailchimp's answer to each row's upsert (``connections`` at a time)."""
        try:
            with ThreadPoolExecutor(len(self.clients), thread_name_prefix="mailchimp") as pool:
                futures = [pool.submit(self.upsert, row) for row in rows]
                try:
                    return [future.result() for future in futures]
                except BaseException:
                    for future in futures:  # an outage or refusal ends the batch: send no more
                        future.cancel()
                    raise
        finally:
            # The engine reads the retries off ``self.http``: the other clients' join them
            # (no upsert is in flight any more once the pool has shut down).
            for client in self.clients[1:]:
                self.http.retried, client.retried = self.http.retried + client.retried, 0

    def upsert(self, row: Row) -> Upserted:
        """Add or update one member, never changing an existing member's status."""
        email, status_if_new = row[0], row[1]
        merge = {self.merge[c]: v for c, v in zip(self.columns[2:], row[2:], strict=True)}
        body: dict[str, Any] = {"email_address": email, "status_if_new": status_if_new}
        # Empty values are left out: they would blank what a person typed into a form there.
        body["merge_fields"] = {tag: value for tag, value in merge.items() if tag and value}
        params = {"skip_merge_validation": "true"} if self.skip_merge_validation else None
        client = self.idle.get()
        try:
            response = client.request("PUT", self.member_path(email), json=body, params=params)
        finally:
            self.idle.put(client)
        if response.ok:
            return Upserted(gone=self.expect(response, "upsert").get("status") in GONE)
        title, detail = problem(response)
        if response.status_code == 404:
            raise Refused(f"{self.name}: audience {self.list_id!r}: {title}: {detail}")
        if title in (COMPLIANCE, FORGOTTEN):  # the person's word, given there: withdrawn
            return Upserted(gone=True)
        return Upserted(problem=excerpt(f"{title}: {detail}", 200))

    def tag_members(self, tag: str, emails: list[str], op: Op) -> dict[str, str]:
        """Add members to (or remove them from) a tag; return Mailchimp's errors by email."""
        field = "members_to_add" if op is Op.ADD else "members_to_remove"
        for attempt in range(2):
            tag_id = self.tag_id(tag, create=op is Op.ADD)
            if tag_id is None:
                return {}  # no such tag: nobody holds it
            path = f"/lists/{self.list_id}/segments/{tag_id}"
            response = self.http.request("POST", path, json={field: emails})
            if response.status_code == 404 and attempt == 0:
                self.tag_ids.pop(tag, None)  # deleted there since we looked: look again
                continue
            answer = self.expect(response, f"{field} of tag {tag!r}")
            return {
                address.lower(): excerpt(str(error.get("error", "refused")), 200)
                for error in answer.get("errors") or []
                for address in error.get("email_addresses") or []
            }
        raise AssertionError("unreachable")  # the second attempt returns or raises

    def tag_id(self, tag: str, *, create: bool) -> int | None:
        """Return the id of the static segment behind a tag (made if ``create``)."""
        if tag not in self.tag_ids:
            found = self.find_tag(tag)
            if found is None and create:
                path = f"/lists/{self.list_id}/segments"
                made = self.http.request("POST", path, json={"name": tag, "static_segment": []})
                found = int(self.expect(made, f"create tag {tag!r}")["id"])
            if found is None:
                return None
            self.tag_ids[tag] = found
        return self.tag_ids[tag]

    def find_tag(self, tag: str) -> int | None:
        """Return the id of the audience's tag named ``tag`` (case aside), None if none."""
        wanted, offset = tag.casefold(), 0
        while True:
            params = {"type": "static", "count": str(PAGE), "offset": str(offset)}
            page = self.http.request("GET", f"/lists/{self.list_id}/segments", params=params)
            answer = self.expect(page, "list tags")
            segments = answer.get("segments") or []
            for segment in segments:
                if str(segment.get("name", "")).casefold() == wanted:
                    return int(segment["id"])
            offset += len(segments)
            if not segments or offset >= int(answer.get("total_items", 0)):
                return None

    def member_path(self, email: str) -> str:
        """Return the path of a member of the audience."""
        return f"/lists/{self.list_id}/members/{subscriber_hash(email)}"

    def expect(self, response: requests.Response, what: str) -> dict[str, Any]:
        """Return a successful answer's JSON object; raise Refused with Mailchimp's words."""
        if not response.ok:
            title, detail = problem(response)
            raise Refused(f"{self.name}: {what}: {response.status_code} {title}: {detail}")
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            raise Refused(f"{self.name}: {what}: answered no JSON") from None
        return answer if isinstance(answer, dict) else {}


def encode_contact(contact: Contact) -> Row | None:
    """Return a contact's Mailchimp row (None without an email)."""
    if not contact.email:
        return None
    status_if_new = "subscribed" if contact.double_opt_in else "pending"
    return (
        contact.email,
        status_if_new,
        contact.first_name,
        contact.last_name,
        contact.company,
        contact.job_title,
    )


def tag_name(settings: Settings, segment_id: str) -> str:
    """Return the tag a segment's members carry (option ``tag.<segment>``, else its id)."""
    return settings.target(segment_id, "tag") or segment_id


def subscriber_hash(email: str) -> str:
    """Return Mailchimp's id of a member: the MD5 of the lowercase email, in hex."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def api_url(key: str, name: str) -> str:
    """Return the API's base URL for a key (its data centre is the part after the dash)."""
    _, dash, dc = key.rpartition("-")
    if not dash or not dc.isalnum():
        raise Refused(f"{name}: the Mailchimp API key has no data centre suffix (like -us21)")
    return f"https://{dc}.api.mailchimp.com/3.0"


def connections(settings: Settings) -> int:
    """Return how many requests may be in flight at once (1 to 10)."""
    raw = settings.option("connections", str(DEFAULT_CONNECTIONS))
    return min(MAX_CONNECTIONS, max(1, int(raw))) if raw.isdigit() else DEFAULT_CONNECTIONS


def problem(response: requests.Response) -> tuple[str, str]:
    """Return the title and detail of an ``application/problem+json`` answer."""
    try:
        body = response.json()
    except ValueError:
        return str(response.status_code), excerpt(response.text, 200)
    if not isinstance(body, dict):
        return str(response.status_code), ""
    return str(body.get("title", response.status_code)), str(body.get("detail", ""))
