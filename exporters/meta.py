"""Meta Custom Audiences (Facebook, Instagram): hashed multi-key rows through the Graph API.

What Meta documents, and what this module does with it:

- Rows follow a multi-key schema (``EXTERN_ID EMAIL PHONE FN LN CT ZIP COUNTRY``); each
  value is normalised (``exporters.identifiers``) and SHA-256 in lowercase hex, but
  ``EXTERN_ID``, sent as it is. A key dmp does not know is left blank (``""``), as the
  docs ask; it is never the hash of an empty text. A contact with neither an email nor a
  phone holding ads consent gets no row: names and an address alone match nobody.
- ``POST /{v}/{audience}/users`` adds, ``DELETE`` on the same edge removes, ``POST
  /{v}/{audience}/usersreplace`` replaces, in a session (``session_id``, a 64-bit
  integer derived from the sync's session, ``batch_seq`` from 1, ``last_batch_flag``,
  ``estimated_num_total``). Parameters go as multipart form fields, as the docs' ``curl
  -F`` examples send them (``payload`` and ``session`` as JSON text, ``access_token``):
  the token rides in the body, never in a URL. ``test()``'s GET sends it as a Bearer
  header, which the Graph API takes too, since a query string shows in urllib3's logs.
- At most 10,000 rows a request: a larger batch is refused before anything is sent (a
  split could get half a batch acknowledged, and the engine checkpoints whole batches).
- The answer counts ``num_received`` and ``num_invalid_entries`` and gives
  ``invalid_entry_samples`` (documented as a map of strings to strings, without row
  numbers). dmp reads each sample's key as the offending value, and refuses every row
  holding one, with Meta's reason. When the samples name fewer rows than Meta counted,
  which of the others were invalid is unknown: all of them are reported as refused
  ("not confirmed"), so that no row Meta called invalid is ever held as sent; the next
  sync sends them again, which is harmless (adds and removes are idempotent).
- Errors arrive as HTTP 400 with ``{"error": {"code", "error_subcode", "message",
  "is_transient"…}}``. Codes 4, 17, 613, 80003 and 80004 (rate limits) and any
  ``is_transient`` error are throttling: ``exporters.http`` retries them with backoff,
  or after ``X-Business-Use-Case-Usage``'s ``estimated_time_to_regain_access``
  (minutes). 190, 102 and 104 (token invalid, expired or missing) raise Refused saying
  to renew the token; 2635 (deprecated version) names ``api_version``; 100 with subcode
  33 (no such audience, or not the token's); 2650 (Meta failed to update the audience)
  and every other code raise Refused with Meta's message: a retry in the same sync will
  not cure them, the next scheduled sync tries again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any, ClassVar

import requests

from dmp.membership.audience import Contact
from dmp.records import Category
from exporters.destination import Batch, Op, Outcome, Refused, Row, Settings
from exporters.http import Http, excerpt
from exporters.identifiers import (
    country_code,
    meta_city,
    meta_email,
    meta_name,
    meta_phone,
    postal_code,
)

log = logging.getLogger(__name__)

BASE_URL = "https://graph.facebook.com"
API_VERSION = "v25.0"
MAX_ROWS = 10_000  # documented per-request maximum
SCHEMA = ("EXTERN_ID", "EMAIL", "PHONE", "FN", "LN", "CT", "ZIP", "COUNTRY")
THROTTLED = frozenset({4, 17, 613, 80003, 80004})
HINTS = {
    190: "the access token is invalid or expired: renew it (option token_env)",
    102: "the access token's session is invalid: renew it (option token_env)",
    104: "no access token reached Meta (option token_env)",
    2635: "this Graph API version is deprecated: set a newer api_version",
    2650: "Meta failed to update the Custom Audience",
    200: "the token lacks permission (ads_management) on this audience",
    294: "the token lacks the ads_management permission",
    10: "the token lacks permission for this call",
}
_EDGES = {Op.ADD: ("POST", "users"), Op.REMOVE: ("DELETE", "users")}
_VERSION = re.compile(r"v\d+\.\d+")
_SCHEMA_LIST = list(SCHEMA)
_dump = json.JSONEncoder(separators=(",", ":")).encode
_SCHEMA_JSON = _dump(_SCHEMA_LIST)
_sha256 = hashlib.sha256
_join_cells = '","'.join


class MetaAudience:
    """A Meta Custom Audience per segment (option ``audience.<segment>``)."""

    channel: ClassVar[Category] = Category.ADS
    columns: ClassVar[tuple[str, ...]] = SCHEMA
    key: ClassVar[int | None] = None  # rows match whole: a changed row is removed and re-added
    batch_size: ClassVar[int] = MAX_ROWS
    replaces: ClassVar[bool] = True
    target_option: ClassVar[str] = "audience"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = settings.option("api_version", API_VERSION)
        self.http = Http(settings, BASE_URL, throttled=self._throttled)
        self._throttles = 0  # throttled answers in a row (their backoff grows)

    def __repr__(self) -> str:
        return f"MetaAudience({self.settings.name!r})"

    @staticmethod
    def check(settings: Settings) -> list[str]:
        """Return what is wrong with the settings: no token_env, a segment without its
        audience, a malformed audience id or api_version."""
        name = settings.name
        problems = settings.needs("token_env", "audience", "the Custom Audience id")
        version = settings.option("api_version")
        if version and not _VERSION.fullmatch(version):
            problems.append(f"{name}: api_version {version!r} is not like {API_VERSION}")
        return problems

    def encode(self, contacts: Sequence[Contact]) -> list[Row | None]:
        """Return each contact's row in ``SCHEMA`` (None: no consented email or phone)."""
        emails = [c.email for c in contacts]
        if _only_emails(contacts) and _normal(emails):
            # The common batch: emails dmp keeps normalised and nothing else to hash, one
            # comprehension each (a benchmark holds this path; encode_row is the full one).
            sha = _sha256
            digests = [sha(e.encode()).hexdigest() if e else "" for e in emails]
            return [
                (c.external_id, d, "", "", "", "", "", "") if d else None
                for c, d in zip(contacts, digests, strict=True)
            ]
        return [encode_row(c) for c in contacts]

    def send(self, batch: Batch) -> Outcome:
        """Send one batch to its Custom Audience; return the rows Meta called invalid."""
        rows = batch.rows if isinstance(batch.rows, list | tuple) else list(batch.rows)
        if len(rows) > MAX_ROWS:
            raise Refused(
                f"{self.settings.name}: a batch of {len(rows)} rows exceeds Meta's {MAX_ROWS} "
                "per request; nothing was sent"
            )
        if not rows:
            if batch.op is Op.REPLACE:
                raise Refused(f"{self.settings.name}: Meta cannot replace an audience with nothing")
            return Outcome()
        method, edge = _EDGES.get(batch.op, ("POST", "usersreplace"))
        token = self._token()
        fields = {
            "payload": (None, payload_json(rows)),
            "session": (None, _dump(session_of(batch))),
            "access_token": (None, token),
        }
        path = f"/{self.version}/{self._audience(batch)}/{edge}"
        answer = self._call(method, path, token, files=fields)
        outcome = outcome_of(rows, answer)
        if outcome.failed:
            refused = len(outcome.failed)
            log.info("%s: %s %s: Meta refused %d rows", self.settings.name, method, path, refused)
        return outcome

    def test(self) -> str:
        """Read each configured audience with the token; return what that proved."""
        token = self._token()
        targets = (self.settings.target(segment, "audience") for segment in self.settings.segments)
        audiences = dict.fromkeys(t for t in targets if t)
        if not audiences:
            me = self._read("me", token)
            return f"token valid (for {me.get('name') or me.get('id')}); no audiences configured"
        found = [f"{self._read(a, token).get('name') or '(unnamed)'} ({a})" for a in audiences]
        many = "audience" if len(found) == 1 else "audiences"
        return f"token valid; {len(found)} {many} reachable: {', '.join(found)}"

    def _read(self, node: str, token: str) -> dict[str, Any]:
        """Return a Graph node's id and name."""
        auth = {"Authorization": f"Bearer {token}"}
        path = f"/{self.version}/{node}"
        return self._call("GET", path, token, params={"fields": "id,name"}, headers=auth)

    def _token(self) -> str:
        # Read at each use, never kept: a rotated token counts at the next call.
        return self.settings.secret("token_env")

    def _audience(self, batch: Batch) -> str:
        audience = batch.target or self.settings.target(batch.segment_id, "audience")
        if not audience:
            raise Refused(f"{self.settings.name}: segment {batch.segment_id} has no audience.<id>")
        return audience

    def _call(self, method: str, path: str, token: str, **kwargs: Any) -> dict[str, Any]:
        """Return Meta's JSON answer; raise Refused (never naming the token) on an error."""
        self._throttles = 0
        response = self.http.request(method, path, **kwargs)
        body = _json(response)
        error = body.get("error")
        if response.ok and body and not error:
            return body
        message = refusal(self.settings.name, f"{method} {path}", response.status_code, error)
        raise Refused(message.replace(token, "***") if token else message)

    def _throttled(self, response: requests.Response) -> float | None:
        """Return how long to wait when Meta's answer is a rate limit or a transient error
        (None: it is neither)."""
        if response.status_code < 400:
            return None
        error = _json(response).get("error")
        if not isinstance(error, dict):
            return None
        if error.get("code") not in THROTTLED and not error.get("is_transient"):
            return None
        self._throttles += 1
        regain = regain_seconds(response.headers)
        return regain if regain else self.http.backoff.compute(self._throttles - 1)


def encode_row(contact: Contact) -> Row | None:
    """Return a contact's multi-key row, normalised and hashed as Meta documents (None
    without a consented email or phone)."""
    email = _digest(meta_email(contact.email)) if contact.email else ""
    phone = _digest(_first_phone(contact.phones)) if contact.phones else ""
    if not (email or phone):
        return None
    country = country_code(contact.country) if contact.country else ""
    return (
        contact.external_id,
        email,
        phone,
        _digest(meta_name(contact.first_name)) if contact.first_name else "",
        _digest(meta_name(contact.last_name)) if contact.last_name else "",
        _digest(meta_city(contact.city)) if contact.city else "",
        _digest(_zip(contact.postal_code, country)) if contact.postal_code else "",
        _digest(country),
    )


def _digest(text: str) -> str:
    """Return the lowercase hex SHA-256 of a normalised value ('' stays '': a blank key)."""
    return _sha256(text.encode()).hexdigest() if text else ""


def _first_phone(phones: Sequence[str]) -> str:
    return next((digits for digits in map(meta_phone, phones) if digits), "")


def _zip(code: str, country: str) -> str:
    # Meta: US ZIP codes are their first five digits (no ZIP+4).
    text = postal_code(code)
    return text[:5] if country == "us" else text


def payload_json(rows: Sequence[Row]) -> str:
    """Return the ``payload`` parameter: ``{"schema": SCHEMA, "data": rows}`` as JSON."""
    # Hex digests and plain ids need no escaping: joined as they are (about twice as fast
    # as the JSON encoder) unless a cell holds a quote (more quotes than the joins put
    # in: 2 per cell, less 2), a backslash, or a character that is not printable (control
    # characters, lone surrogates): then the JSON encoder does it. (Leaving keys no row
    # has out of the schema would upload fewer bytes but cost more CPU than the join:
    # measured, not done.)
    data = '"],["'.join(map(_join_cells, rows))
    quotes = 2 * len(SCHEMA) * len(rows) - 2
    if data.count('"') == quotes and "\\" not in data and data.isprintable():
        return f'{{"schema":{_SCHEMA_JSON},"data":[["{data}"]]}}'
    return _dump({"schema": _SCHEMA_LIST, "data": rows})


_OTHER_KEYS = [attrgetter(name) for name in ("phones", "first_name", "last_name", "city")]
_OTHER_KEYS += [attrgetter("postal_code"), attrgetter("country")]


def _only_emails(contacts: Sequence[Contact]) -> bool:
    """Return whether no contact has a key but its email and external id (a pass in C
    per key: cheaper than one Python test per contact)."""
    return not any(any(map(key, contacts)) for key in _OTHER_KEYS)


def _normal(emails: list[str]) -> bool:
    """Return whether every email is already as Meta hashes it (trimmed, lowercase)."""
    blob = "".join(emails)
    return blob.isascii() and blob.lower() == blob and len(blob.split()) <= 1


def session_of(batch: Batch) -> dict[str, Any]:
    """Return the ``session`` parameter for a batch (a replace session's, or an upload's)."""
    return {
        "session_id": session_id(batch),
        "batch_seq": batch.number,
        "last_batch_flag": batch.last,
        "estimated_num_total": batch.total,
    }


def session_id(batch: Batch) -> int:
    """Return a positive 64-bit session id, the same for every batch of one sync's op on
    one audience (a resumed sync goes on with the same session)."""
    seed = f"{batch.session}|{batch.segment_id}|{batch.target}|{batch.op.value}".encode()
    return int.from_bytes(_sha256(seed).digest()[:8], "big") >> 1 or 1


def outcome_of(rows: Sequence[Row], answer: Mapping[str, Any]) -> Outcome:
    """Return which rows Meta called invalid, or did not confirm (see the module's
    docstring)."""
    invalid = _count(answer.get("num_invalid_entries"))
    received = _count(answer.get("num_received", len(rows)))
    if not invalid and received >= len(rows):
        return Outcome()
    failed = _sampled(rows, answer.get("invalid_entry_samples") or {})
    if len(failed) < invalid or received < len(rows):
        unknown = (
            f"not confirmed: Meta received {received} of {len(rows)} rows, counted {invalid} "
            f"invalid and named {len(failed)}"
        )
        for i in range(len(rows)):
            failed.setdefault(i, unknown)
    return Outcome(failed=failed)


def _sampled(rows: Sequence[Row], samples: Any) -> dict[int, str]:
    """Return the rows holding a value Meta sampled as invalid, with Meta's reason."""
    if not isinstance(samples, Mapping):  # a list of values: not documented, but seen
        samples = dict.fromkeys(map(str, samples), "invalid entry")
    failed: dict[int, str] = {}
    for i, row in enumerate(rows):
        hit = next((cell for cell in row if cell and cell in samples), None)
        if hit is not None:
            failed[i] = f"Meta: {excerpt(str(samples[hit]), 120)}"
    return failed


def refusal(name: str, where: str, status: int, error: Any) -> str:
    """Return the message of a Refused for Meta's error (or a non-JSON answer)."""
    if not isinstance(error, dict):
        return f"{name}: {where}: HTTP {status} without a Graph API answer (JSON)"
    code, subcode = error.get("code"), error.get("error_subcode")
    said = error.get("error_user_msg") or error.get("message") or "no message"
    hint = HINTS.get(code, "") if isinstance(code, int) else ""
    if code == 100 and subcode == 33:
        hint = "no such Custom Audience, or the token may not use it: check audience.<segment>"
    which = f"{code}/{subcode}" if subcode else f"{code}"
    text = f"{name}: {where}: Meta error {which}: {excerpt(str(said), 200)}"
    return f"{text} ({hint})" if hint else text


def regain_seconds(headers: Mapping[str, str]) -> float:
    """Return the longest ``estimated_time_to_regain_access`` (minutes) in Meta's
    ``X-Business-Use-Case-Usage`` header, in seconds (0: none given)."""
    try:
        usage = json.loads(headers.get("X-Business-Use-Case-Usage") or "{}")
        waits = [
            float(entry.get("estimated_time_to_regain_access") or 0)
            for group in usage.values()
            for entry in group
            if isinstance(entry, dict)
        ]
    except (ValueError, TypeError, AttributeError):
        return 0.0
    return max(waits, default=0.0) * 60.0


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
