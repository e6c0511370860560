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
from typing import Any, ClassVar

import requests

from dmp.membership.audience import Contact
from dmp.records import Category
from exporters.destination import Batch, Op, Outcome, Refused, Row, Settings
from exporters.http import Http, excerpt
from exporters.metarows import SCHEMA, encode_rows, payload_json

log = logging.getLogger(__name__)

BASE_URL = "https://graph.facebook.com"
API_VERSION = "v25.0"
MAX_ROWS = 10_000  # documented per-request maximum
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
_dump = json.JSONEncoder(separators=(",", ":")).encode
_sha256 = hashlib.sha256


class MetaAudience:
    """A Meta Custom Audience per segment (option ``audience.<segment>``)."""

    channel: ClassVar[Category] = Category.ADS
    columns: ClassVar[tuple[str, ...]] = SCHEMA
    key: ClassVar[int | None] = None  # rows match whole: a changed row is removed and re-added
    batch_size: ClassVar[int] = MAX_ROWS
    replaces: ClassVar[bool] = True

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
        return encode_rows(contacts)

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
