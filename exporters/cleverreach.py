"""CleverReach (common in Germany): a segment is one of the account's receiver groups.

What dmp does with CleverReach's REST API v3 (``https://rest.cleverreach.com/v3``,
OAuth2 ``Authorization: Bearer``):

- add: for each row, ``GET groups.json/{group}/receivers/{email}`` reads the receiver's
  state in the group (404: not there). A receiver with ``deactivated`` set unsubscribed
  (or was deactivated) in CleverReach: it is left alone and reported in
  ``Outcome.unsubscribed``. The others go in one ``POST
  groups.json/{group}/receivers/upsertplus`` (at most 1,000 receivers a call, the batch
  size) with ``email``, ``source``, ``global_attributes`` (firstname, lastname,
  company, country: global attributes the account must define) and the tag
  ``dmp.<segment>``. Activation follows double opt-in: a new receiver gets
  ``registered`` now and ``activated`` now only when dmp holds a confirmed double
  opt-in for the address, else ``activated: 0`` (inactive until the person confirms,
  CleverReach's DOI flow); a pending receiver is activated once dmp holds the
  confirmation; an active one is sent no state at all. ``deactivated`` is never sent (a
  0 there re-activates). The answer lists the receivers upserted: a row missing from it
  (an address CleverReach refused) is a failed row.
- remove: ``DELETE groups.json/{group}/receivers/{email}`` for an active or pending
  receiver (it has no unsubscribe to lose); a deactivated receiver is kept, so its
  unsubscribe stays on record in the group, and counts as removed (it gets no mail).
  Give each segment a group of its own: dmp deletes the receivers that leave it.

Each batch first reads ``groups.json/{group}``: an unknown group refuses the batch.
Errors are ``{"error": {"code": …, "message": …}}``. The tests' contract server
(``tests/exporters/contracts/cleverreach.py``) speaks this.

Options: ``token_env`` (the environment variable holding the OAuth access token),
``group.<segment>`` (the group id of each segment), ``source`` (the receivers' source,
default "dmp"), ``per_minute`` (request pace, default none), ``base_url`` and the retry
options of ``exporters.http``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import quote

import requests

from dmp.membership.audience import Contact
from dmp.records import Category
from exporters.destination import Batch, Op, Outcome, Refused, Row, Settings
from exporters.http import Http, excerpt

BASE_URL = "https://rest.cleverreach.com/v3"
UPSERT_LIMIT = 1000  # receivers per upsertplus call
# CleverReach's global attributes, by the row column holding each.
GLOBALS = (("firstname", 1), ("lastname", 2), ("company", 3), ("country", 4))

Receiver = dict[str, Any]


class CleverReachGroup:
    """Pushes a segment's members into a CleverReach receiver group."""

    channel = Category.EMAIL
    columns = ("email", "first_name", "last_name", "company", "country", "double_opt_in")
    key = 0
    batch_size = UPSERT_LIMIT
    replaces = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source = settings.option("source", "dmp")
        self.http = Http(
            settings,
            BASE_URL,
            {
                "Authorization": f"Bearer {settings.secret('token_env')}",
                "Accept": "application/json",
            },
            per_minute=int(settings.option("per_minute", "0")),
        )

    @staticmethod
    def check(settings: Settings) -> list[str]:
        """Return what is missing or wrong in the settings, one line each."""
        return settings.needs("token_env", "group", "the CleverReach group id")

    def encode(self, contacts: Sequence[Contact]) -> list[Row | None]:
        """Return each contact's row (None without email); the double opt-in is part of
        it, so a confirmation arriving later re-sends the row and activates it."""
        return [
            (c.email, c.first_name, c.last_name, c.company, c.country, str(int(c.double_opt_in)))
            if c.email
            else None
            for c in contacts
        ]

    def send(self, batch: Batch) -> Outcome:
        """Upsert the batch's receivers into the segment's group, or take them out."""
        if batch.op not in (Op.ADD, Op.REMOVE):
            raise Refused(f"{self.settings.name}: CleverReach groups take adds and removes")
        # A receiver's 404 cannot tell a missing group from a missing receiver: read the
        # group first, or removes from a mistyped group would pass for done.
        self._ok(self.http.request("GET", f"/groups.json/{batch.target}"), "the group")
        if batch.op is Op.REMOVE:
            return self._remove(batch)
        return self._add(batch)

    def test(self) -> str:
        """Read the account and every configured group; return what was found."""
        who = self._ok(self.http.request("GET", "/debug/whoami.json"), "the account")
        names = []
        for segment in self.settings.segments:
            group = self.settings.target(segment, "group")
            found = self._ok(self.http.request("GET", f"/groups.json/{group}"), "a group")
            names.append(f"{group} ({found.get('name', '?')})")
        account = who.get("company") or who.get("login") or who.get("id", "?")
        return f"cleverreach account {account}; groups {', '.join(names) or 'none configured'}"

    def _add(self, batch: Batch) -> Outcome:
        outcome, receivers, sent = Outcome(), [], []
        now = int(time.time())
        for i, row in enumerate(batch.rows):
            state = self._receiver(batch.target, row[0])
            if isinstance(state, str):
                outcome.failed[i] = state
            elif state is not None and state.get("deactivated"):
                outcome.unsubscribed.append(i)  # never re-activated
            else:
                receivers.append(self._body(row, state, batch.segment_id, now))
                sent.append(i)
        if receivers:
            path = f"/groups.json/{batch.target}/receivers/upsertplus"
            upserted = self._upserted(self.http.request("POST", path, json=receivers))
            for i in sent:
                held = upserted.get(batch.rows[i][0].lower())
                if held is None:
                    outcome.failed[i] = "cleverreach: receiver not accepted"
                elif held.get("deactivated"):
                    outcome.unsubscribed.append(i)
        outcome.unsubscribed.sort()
        return outcome

    def _body(self, row: Row, state: Receiver | None, segment: str, now: int) -> Receiver:
        """Return one receiver of an upsertplus call."""
        body: Receiver = {
            "email": row[0],
            "source": self.source,
            "global_attributes": {name: row[column] for name, column in GLOBALS if row[column]},
            "tags": [f"dmp.{segment}"],
        }
        confirmed = row[5] == "1"
        if state is None:
            body["registered"] = now
            body["activated"] = now if confirmed else 0
        elif not state.get("activated"):
            body["activated"] = now if confirmed else 0
        return body

    def _remove(self, batch: Batch) -> Outcome:
        outcome = Outcome()
        for i, row in enumerate(batch.rows):
            state = self._receiver(batch.target, row[0])
            if isinstance(state, str):
                outcome.failed[i] = state
            elif state is not None and not state.get("deactivated"):
                answer = self.http.request("DELETE", self._path(batch.target, row[0]))
                if answer.status_code not in (200, 404):
                    self._refuse(answer, f"group {batch.target}: delete")
        return outcome

    def _receiver(self, group: str, email: str) -> Receiver | None | str:
        """Return a receiver's state in the group, None if absent, or why it was refused."""
        answer = self.http.request("GET", self._path(group, email))
        if answer.status_code == 404:
            return None
        if answer.status_code == 200:
            return answer.json() or {}
        if answer.status_code == 400:
            code, message = _error(answer)
            return f"cleverreach {code}: {message}"
        self._refuse(answer, f"group {group}: receiver")

    def _upserted(self, answer: requests.Response) -> dict[str, Receiver]:
        """Return the receivers an upsertplus answer lists, by lowercase email."""
        if answer.status_code not in (200, 201):
            self._refuse(answer, "upsertplus")
        body = answer.json() if answer.content else None
        if not isinstance(body, list):
            return {}  # CleverReach answers false when it upserted nobody
        return {str(r.get("email", "")).lower(): r for r in body if isinstance(r, dict)}

    def _path(self, group: str, email: str) -> str:
        return f"/groups.json/{group}/receivers/{quote(email, safe='@')}"

    def _ok(self, answer: requests.Response, what: str) -> Receiver:
        if answer.status_code != 200:
            self._refuse(answer, f"reading {what}")
        return answer.json() or {}

    def _refuse(self, answer: requests.Response, what: str) -> NoReturn:
        code, message = _error(answer)
        raise Refused(f"{self.settings.name}: {what}: {code} {message}")


def _error(answer: requests.Response) -> tuple[str, str]:
    """Return CleverReach's error code and message (the body's start if not its shape)."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    found = body.get("error") if isinstance(body, dict) else None
    if not isinstance(found, dict):
        return str(answer.status_code), excerpt(answer.text, 120)
    return str(found.get("code", answer.status_code)), excerpt(str(found.get("message", "")), 120)
