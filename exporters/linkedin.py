"""LinkedIn Matched Audiences: a segment's members streamed into a DMP segment as hashed
emails (kind ``linkedin``).

Checked against LinkedIn's Marketing API pages ("DMP Segment Users", "DMP Segments",
"DMP Segment Destinations", the Matched Audiences FAQ) and Segment's LinkedIn
Audiences destination:

- ``POST https://api.linkedin.com/rest/dmpSegments/{id}/users`` with
  ``LinkedIn-Version: YYYYMM``, ``X-Restli-Protocol-Version: 2.0.0`` and
  ``X-RestLi-Method: BATCH_CREATE``; body ``{"elements": [{"action": "ADD" | "REMOVE",
  "userIds": [{"idType": "SHA256_EMAIL", "idValue": <64 hex>}]}]}``; OAuth2 Bearer with
  ``rw_dmp_segments``;
- the answer (200) has one ``elements[i].status`` per element, 201 when taken (also for
  an id added twice or removed when absent); since version 202502 elements are
  validated one by one, and a refused one carries its 4xx status and error while the
  others are taken: those become ``Outcome.failed``;
- 600 requests a minute per member on ``/users``, 429 beyond: paced here (Http's
  ``per_minute``), and a 429 is retried;
- at most 5,000 elements a request (as Segment's and other integrations' docs give it;
  not found on LinkedIn's own pages here);
- ``GET /rest/dmpSegments/{id}`` gives the segment's ``type`` and, per destination, its
  ``status`` and ``audienceSize`` (what campaigns can reach; ``matchedCount`` counts the
  last seven days' matches only);
- **minimum audience 300**: a DMP segment matching fewer than 300 members cannot serve a
  campaign. dmp still streams it (it grows), and ``test()`` says when a segment's
  audience is under the minimum.

Emails are hashed as Meta does it (trimmed, lowercase: ``identifiers.meta_email``); a
contact without a consented email has no row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import requests

from dmp.membership.audience import Contact
from dmp.records import Category
from exporters.destination import Batch, Op, Outcome, Refused, Row, Settings
from exporters.http import Http, excerpt
from exporters.identifiers import meta_email

API = "https://api.linkedin.com"
API_VERSION = "202604"  # a version LinkedIn serves for a year after its release
PER_MINUTE = 600  # requests a member may make to /users in a minute
MINIMUM_AUDIENCE = 300  # matched members a segment needs before a campaign can use it


class LinkedInAudience:
    """A LinkedIn DMP segment (of users) per dmp segment, fed by hashed email."""

    channel: ClassVar[Category] = Category.ADS
    columns: ClassVar[tuple[str, ...]] = ("email_sha256",)
    key: ClassVar[int | None] = None
    batch_size: ClassVar[int] = 5_000
    replaces: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        headers = {
            "Authorization": f"Bearer {settings.secret('token_env')}",
            "LinkedIn-Version": settings.option("api_version", API_VERSION),
            "X-Restli-Protocol-Version": "2.0.0",
        }
        self.http = Http(settings, API, headers, per_minute=PER_MINUTE)

    @staticmethod
    def check(settings: Settings) -> list[str]:
        """Return what is wrong with the settings, one line each."""
        problems = settings.needs("token_env", "audience", "the DMP segment id")
        version = settings.option("api_version", API_VERSION)
        if not (len(version) == 6 and version.isdigit()):
            problems.append("api_version must be a LinkedIn version month, YYYYMM")
        return problems

    def encode(self, contacts: Sequence[Contact]) -> list[Row | None]:
        """Return each contact's row: the SHA-256 of their email (None: no email)."""
        sha256 = hashlib.sha256
        out: list[Row | None] = []
        for contact in contacts:
            email = meta_email(contact.email) if contact.email else ""
            out.append((sha256(email.encode()).hexdigest(),) if email else None)
        return out

    def send(self, batch: Batch) -> Outcome:
        """Add or remove a batch of users; return the elements LinkedIn refused."""
        if batch.op is Op.REPLACE:
            raise Refused(f"{self.settings.name}: DMP segments take no replace")
        target = batch.target or self.settings.target(batch.segment_id, "audience")
        if not target:
            raise Refused(f"{self.settings.name}: audience.{batch.segment_id} is not set")
        action = "ADD" if batch.op is Op.ADD else "REMOVE"
        elements = [
            {"action": action, "userIds": [{"idType": "SHA256_EMAIL", "idValue": row[0]}]}
            for row in batch.rows
        ]
        path = f"/rest/dmpSegments/{quote(target, safe='')}/users"
        response = self.http.request(
            "POST",
            path,
            data=json.dumps({"elements": elements}),
            headers={"Content-Type": "application/json", "X-RestLi-Method": "BATCH_CREATE"},
        )
        if response.status_code != 200:
            raise Refused(f"{self.settings.name}: POST {path}: {_problem(response)}")
        try:
            return outcome(_body(response), len(elements))
        except Refused as exc:
            raise Refused(f"{self.settings.name}: POST {path}: {exc}") from None

    def test(self) -> str:
        """Read each configured DMP segment; return its type, status and audience (and
        whether it is under LinkedIn's 300-member minimum)."""
        lines = []
        for segment in self.settings.segments:
            target = self.settings.target(segment, "audience")
            if not target:
                raise Refused(f"{self.settings.name}: audience.{segment} is not set")
            path = f"/rest/dmpSegments/{quote(target, safe='')}"
            response = self.http.request("GET", path)
            if response.status_code != 200:
                raise Refused(f"{self.settings.name}: GET {path}: {_problem(response)}")
            try:
                lines.append(f"{segment}: {describe(_body(response), target)}")
            except Refused as exc:
                raise Refused(f"{self.settings.name}: {exc}") from None
        return "; ".join(lines)


def outcome(answer: dict[str, Any], sent: int) -> Outcome:
    """Return the elements a BATCH_CREATE answer refused (index -> status and message)."""
    results = answer.get("elements")
    if not isinstance(results, list) or len(results) != sent:
        raise Refused(f"answered {len(results or [])} results for {sent} elements")
    failed: dict[int, str] = {}
    for i, result in enumerate(results):
        status = result.get("status") if isinstance(result, dict) else None
        if isinstance(status, int) and 200 <= status < 300:
            continue
        error = (result.get("error") or result) if isinstance(result, dict) else {}
        failed[i] = f"{status} {error.get('message', '')}".strip()
    return Outcome(failed)


def describe(segment: dict[str, Any], target: str) -> str:
    """Return one line on a DMP segment: name, type, status, audience size."""
    kind = str(segment.get("type", "?"))
    if "COMPANY" in kind:
        raise Refused(f"DMP segment {target} is a {kind} segment: dmp streams users")
    linkedin = next(
        (d for d in segment.get("destinations") or [] if d.get("destination") == "LINKEDIN"), {}
    )
    size = linkedin.get("audienceSize")
    status = linkedin.get("status", "no LinkedIn destination")
    line = f"DMP segment {target} {segment.get('name', '')!r} ({kind}, {status}), audience "
    if not isinstance(size, int):
        return line + "not counted yet"
    line += str(size)
    if size < MINIMUM_AUDIENCE:
        line += f": under LinkedIn's {MINIMUM_AUDIENCE}-member minimum, no campaign can use it yet"
    return line


def _body(response: requests.Response) -> dict[str, Any]:
    """Return a JSON object answer ({} when it is none)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _problem(response: requests.Response) -> str:
    """Return an error answer's status, code and message, as LinkedIn words them."""
    body = _body(response)
    code = body.get("code") or body.get("serviceErrorCode") or ""
    message = body.get("message") or excerpt(response.text)
    return f"{response.status_code} {code} {message}".replace("  ", " ")
