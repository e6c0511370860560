"""Brevo (formerly Sendinblue): a segment is one of the account's contact lists.

What dmp does with Brevo's documented API (``https://api.brevo.com/v3``, header
``api-key``):

- add: for each row, ``GET /contacts/{email}`` says whether Brevo knows the address
  and whether it is *blacklisted* (unsubscribed from email). A blacklisted contact is
  left alone and reported in ``Outcome.unsubscribed`` (dmp then withdraws its email
  consent): dmp never sends ``emailBlacklisted`` at all, so it can never re-subscribe
  anyone. Others are upserted with ``POST /contacts`` (``email``, UPPERCASE
  ``attributes`` FIRSTNAME/LASTNAME, ``updateEnabled: true``) when new or changed, then
  the batch joins the list in one ``POST /contacts/lists/{id}/contacts/add`` (at most
  150 emails a call: Brevo's limit, and the batch size). The answer's ``failure``
  emails are refused rows; a 400 "Contact already in list and/or does not exist" means
  none was added.
- remove: ``POST /contacts/lists/{id}/contacts/remove`` (150 emails). An address the
  answer lists as a failure is already out of the list (or unknown): that is the state
  dmp asked for, so it counts as acknowledged. The contact itself stays in Brevo, with
  its blacklist status: removing from a list never deletes an unsubscribe.

The per-contact look-up costs a call per row, so the default pace is the contacts
endpoints' documented limit (36,000 requests an hour: 600 a minute). A 429 carries
``x-sib-ratelimit-reset`` (seconds until the window resets): the wait it asks for.
Errors are ``{"code": …, "message": …}``.

Options: ``api_key_env`` (the environment variable holding the API key), ``list.<segment>``
(the Brevo list id of each segment), ``per_minute`` (request pace, 0 for none),
``base_url`` and the retry options of ``exporters.http``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import requests

from dmp.membership.audience import Contact
from dmp.records import Category
from exporters.destination import Batch, Op, Outcome, Refused, Row, Settings
from exporters.http import Http, excerpt

BASE_URL = "https://api.brevo.com/v3"
LIST_LIMIT = 150  # emails per list add or remove call (Brevo's documented maximum)
PER_MINUTE = 600  # 36,000 requests an hour on the /contacts endpoints
# Brevo's 400 when no email of a list call changed anything (its message, its words).
NOTHING_ADDED = "already in list"
NOTHING_REMOVED = "already removed from list"


class BrevoList:
    """Pushes a segment's members into a Brevo contact list."""

    channel = Category.EMAIL
    columns = ("email", "first_name", "last_name")
    key = 0
    batch_size = LIST_LIMIT
    replaces = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = Http(
            settings,
            BASE_URL,
            {"api-key": settings.secret("api_key_env"), "Accept": "application/json"},
            throttled=reset_wait,
            per_minute=int(settings.option("per_minute", str(PER_MINUTE))),
        )

    @staticmethod
    def check(settings: Settings) -> list[str]:
        """Return what is missing or wrong in the settings, one line each."""
        return settings.needs("api_key_env", "list", "the Brevo list id")

    def encode(self, contacts: Sequence[Contact]) -> list[Row | None]:
        """Return each contact's row: email, first and last name (None without email)."""
        return [(c.email, c.first_name, c.last_name) if c.email else None for c in contacts]

    def send(self, batch: Batch) -> Outcome:
        """Add the batch's contacts to the segment's list, or remove them from it."""
        if batch.op is Op.REMOVE:
            return self._remove(batch)
        if batch.op is Op.ADD:
            return self._add(batch)
        raise Refused(f"{self.settings.name}: Brevo lists take adds and removes, not replaces")

    def test(self) -> str:
        """Read the account and every configured list; return what was found."""
        account = self._ok(self.http.request("GET", "/account"), "the account")
        who = account.get("companyName") or account.get("email") or "?"
        names = []
        for segment in self.settings.segments:
            list_id = self.settings.target(segment, "list")
            found = self._ok(self.http.request("GET", f"/contacts/lists/{list_id}"), "a list")
            names.append(f"{list_id} ({found.get('name', '?')})")
        return f"brevo account {who}; lists {', '.join(names) or 'none configured'}"

    def _add(self, batch: Batch) -> Outcome:
        outcome, joining = Outcome(), []
        for i, row in enumerate(batch.rows):
            state = self._upsert(row, int(batch.target))
            if state == "unsubscribed":
                outcome.unsubscribed.append(i)
            elif state == "join":
                joining.append(i)
            elif state != "member":
                outcome.failed[i] = state
        if joining:
            emails = [batch.rows[i][0] for i in joining]
            refused = self._list_call(batch.target, "add", emails, NOTHING_ADDED)
            for i in joining:
                if batch.rows[i][0].lower() in refused:
                    outcome.failed[i] = "brevo: not added to the list"
        return outcome

    def _remove(self, batch: Batch) -> Outcome:
        # Brevo's failures here are addresses not in the list: what a remove asks for.
        self._list_call(batch.target, "remove", [row[0] for row in batch.rows], NOTHING_REMOVED)
        return Outcome()

    def _upsert(self, row: Row, list_id: int) -> str:
        """Create or update one contact; return "unsubscribed", "member" (already in the
        list), "join" (to be added) or why Brevo refused it."""
        email, first, last = row
        answer = self.http.request("GET", f"/contacts/{quote(email, safe='@')}")
        if answer.status_code == 404:
            found: dict[str, Any] | None = None
        elif answer.status_code == 200:
            found = answer.json()
        else:
            return self._row_problem(answer)
        if found and found.get("emailBlacklisted"):
            return "unsubscribed"
        attributes = {k: v for k, v in (("FIRSTNAME", first), ("LASTNAME", last)) if v}
        held = (found or {}).get("attributes") or {}
        if found is None or any(held.get(k) != v for k, v in attributes.items()):
            # Never emailBlacklisted: leaving it out is what keeps an unsubscribe.
            body = {"email": email, "attributes": attributes, "updateEnabled": True}
            answer = self.http.request("POST", "/contacts", json=body)
            if answer.status_code not in (200, 201, 204):
                return self._row_problem(answer)
        return "member" if found and list_id in found.get("listIds", ()) else "join"

    def _list_call(self, list_id: str, verb: str, emails: list[str], nothing: str) -> set[str]:
        """Add emails to a list or remove them; return the ones Brevo did not change."""
        path = f"/contacts/lists/{list_id}/contacts/{verb}"
        answer = self.http.request("POST", path, json={"emails": emails})
        if answer.status_code == 400 and nothing in _error(answer)[1].lower():
            return {e.lower() for e in emails}
        if answer.status_code not in (200, 201):
            code, message = _error(answer)
            raise Refused(f"{self.settings.name}: list {list_id} {verb}: {code} {message}")
        contacts = (answer.json() or {}).get("contacts") or {}
        return {str(e).lower() for e in contacts.get("failure") or ()}

    def _ok(self, answer: requests.Response, what: str) -> dict[str, Any]:
        if answer.status_code != 200:
            code, message = _error(answer)
            raise Refused(f"{self.settings.name}: reading {what}: {code} {message}")
        return answer.json() or {}

    def _row_problem(self, answer: requests.Response) -> str:
        """Return a refused row's reason; raise if the whole request was wrong."""
        if answer.status_code in (400, 404):
            code, message = _error(answer)
            return f"brevo {code}: {message}"
        raise Refused(f"{self.settings.name}: {answer.status_code} {excerpt(answer.text)}")


def reset_wait(response: requests.Response) -> float | None:
    """Return the seconds a 429's ``x-sib-ratelimit-reset`` asks for (None otherwise)."""
    if response.status_code != 429:
        return None
    try:
        return max(0.0, float(response.headers.get("x-sib-ratelimit-reset", "")))
    except ValueError:
        return None  # no usable header: the usual backoff


def _error(answer: requests.Response) -> tuple[str, str]:
    """Return Brevo's error ``code`` and ``message`` (the body's start if not JSON)."""
    try:
        body = answer.json()
    except ValueError:
        return str(answer.status_code), excerpt(answer.text, 120)
    if not isinstance(body, dict):
        return str(answer.status_code), excerpt(answer.text, 120)
    return str(body.get("code", answer.status_code)), excerpt(str(body.get("message", "")), 120)
