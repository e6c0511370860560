"""Meta's Graph API for Custom Audiences, as documented, for ``ContractServer``.

What it implements (Marketing API reference: Custom Audience Users, Usersreplace, Customer
File Custom Audiences; Graph API error handling and rate limiting):

- ``POST`` / ``DELETE /{v}/{audience}/users`` and ``POST /{v}/{audience}/usersreplace``
  taking ``payload`` (``{"schema", "data"}``), ``session`` and ``access_token`` as form
  fields (url-encoded or multipart, JSON text each) or one JSON body; ``GET /{v}/{node}``
  (``fields=id,name``) for an audience or ``me``.
- The access token from the body, the query or ``Authorization: Bearer|OAuth``: missing →
  code 104, wrong → 190 (``OAuthException``, HTTP 400, ``WWW-Authenticate``).
- A version older than ``oldest`` → 2635; an unknown audience → 100/33
  (``GraphMethodException``).
- The schema: a list of known multi-key names without repeats (or ``EMAIL_SHA256``,
  ``PHONE_SHA256``, ``MOBILE_ADVERTISER_ID`` with a list of strings); 1 to 10,000 rows
  (more, or none → code 100). Each row is checked: one string per key, at least one
  non-blank key, every key but ``EXTERN_ID`` and ``MADID`` blank or 64-char lowercase
  hex. Invalid rows are counted in ``num_invalid_entries``, up to ``samples`` of them
  named in ``invalid_entry_samples`` (offending value → reason) and not applied. (dmp's
  own strictness: the hash of an empty text is invalid too; Meta cannot tell.)
- Members are held per audience as the set of non-blank (key, value) pairs of a row; a
  remove drops exactly the rows added so.
- Replace sessions: ``session_id`` a positive 64-bit integer, ``batch_seq`` from 1 with
  no gap (a gap → code 100), a batch repeated with the same rows is answered again
  without change, one with other rows → code 100; at ``last_batch_flag`` the audience
  becomes exactly the session's valid rows, and later batches of that session (but
  repeats) → code 100. A new session supersedes an unfinished one (Meta times sessions
  out after 90 minutes; not modelled). ``session`` on ``/users`` is checked for shape.
- Faults in Meta's words for ``ContractServer.inject``: ``throttled(code)`` (4, 17, 613,
  80003: HTTP 400, optionally ``X-Business-Use-Case-Usage`` asking for minutes),
  ``server_error()`` (HTTP 500, code 2, transient), ``expired_token()`` (190/463).

Every acknowledged write is recorded (``acknowledged()``) so that a test can check that
no acknowledged batch was sent twice.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request

from tests.exporters.contracts.server import Fault

KEYS = ("EXTERN_ID", "EMAIL", "PHONE", "GEN", "DOBY", "DOBM", "DOBD", "LN", "FN", "FI")
KEYS += ("CT", "ST", "ZIP", "MADID", "COUNTRY")
PLAIN = frozenset({"EXTERN_ID", "MADID"})  # not hashed
SHORT_SCHEMAS = {"EMAIL_SHA256": "EMAIL", "PHONE_SHA256": "PHONE", "MOBILE_ADVERTISER_ID": "MADID"}
MAX_ROWS = 10_000
MAX_BYTES = 32 * 2**20
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"v(\d+)\.(\d+)")
THROTTLE_MESSAGES = {
    4: "(#4) Application request limit reached",
    17: "(#17) User request limit reached",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    80003: "(#80003) There have been too many calls to this ad-account. Wait a bit and try "
    "again. For more info, please refer to "
    "https://developers.facebook.com/docs/graph-api/overview/rate-limiting#custom-audience.",
}

Member = frozenset[tuple[str, str]]


def graph_error(
    message: str, code: int, *, status: int = 400, kind: str = "OAuthException", **extra: Any
) -> Response:
    """Return a Graph API error answer (``{"error": {...}}``)."""
    error = {"message": message, "type": kind, "code": code, **extra, "fbtrace_id": "AdmpTrace"}
    response = Response(json.dumps({"error": error}), status, mimetype="application/json")
    if code in (190, 104):
        response.headers["WWW-Authenticate"] = (
            f'OAuth "Facebook Platform" "invalid_token" "{message}"'
        )
    return response


def invalid(message: str, **extra: Any) -> Response:
    """Return code 100 (Invalid parameter) with a user message."""
    return graph_error("(#100) Invalid parameter", 100, error_user_msg=message, **extra)


def throttled(code: int = 17, *, regain_minutes: int = 0, transient: bool = False) -> Fault:
    """Return a fault answering a rate limit in Meta's words (HTTP 400)."""

    def fault() -> Response:
        answer = graph_error(THROTTLE_MESSAGES[code], code, is_transient=transient)
        if regain_minutes:
            usage = {"type": "custom_audience", "call_count": 100, "total_cputime": 20}
            usage |= {"total_time": 30, "estimated_time_to_regain_access": regain_minutes}
            answer.headers["X-Business-Use-Case-Usage"] = json.dumps({"1234": [usage]})
        return answer

    return fault


def server_error() -> Fault:
    """Return a fault answering Meta's transient server error (HTTP 500, code 2)."""
    message = "An unexpected error has occurred. Please retry your request later."
    return lambda: graph_error(message, 2, status=500, is_transient=True)


def expired_token() -> Fault:
    """Return a fault answering that the access token expired (code 190, subcode 463)."""
    message = "Error validating access token: Session has expired on Monday, 01-Jan-24."
    return lambda: graph_error(message, 190, error_subcode=463)


@dataclass(slots=True)
class ReplaceSession:
    """One replace session's batches so far."""

    session_id: int
    batches: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    members: set[Member] = field(default_factory=set)
    finished: bool = False


class MetaGraph:
    """What Meta holds for one ad account (audiences, members, sessions) and the Flask
    app speaking the Graph API for it."""

    def __init__(self, token: str, *, samples: int = 10, oldest: str = "v20.0") -> None:
        self.token = token
        self.samples = samples
        self.oldest = _version(oldest)
        self.names: dict[str, str] = {}
        self.audiences: dict[str, set[Member]] = {}
        self.schemas: dict[str, tuple[str, ...]] = {}
        self.sessions: dict[str, ReplaceSession] = {}
        self.log: list[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]]] = []
        self.lock = threading.Lock()

    def create_audience(self, audience_id: str, name: str) -> None:
        """Create an empty Custom Audience."""
        self.names[audience_id] = name
        self.audiences[audience_id] = set()

    def members(self, audience_id: str, columns: tuple[str, ...] | None = None) -> set[tuple]:
        """Return an audience's members as rows in ``columns`` (default: the last schema
        uploaded to it)."""
        columns = columns or self.schemas.get(audience_id, KEYS)
        with self.lock:
            return {tuple(dict(m).get(c, "") for c in columns) for m in self.audiences[audience_id]}

    def acknowledged(
        self, columns: tuple[str, ...] | None = None
    ) -> list[tuple[str, tuple[tuple[str, ...], ...]]]:
        """Return every acknowledged write as (op: add, remove or replace, rows): rows as
        sent, or in ``columns`` ('' for a key a request's schema left out)."""
        with self.lock:
            log = list(self.log)
        if columns is None:
            return [(op, rows) for op, _, rows in log]
        return [
            (
                op,
                tuple(
                    tuple(dict(zip(schema, r, strict=False)).get(c, "") for c in columns)
                    for r in rows
                ),
            )
            for op, schema, rows in log
        ]

    def app(self) -> Flask:
        """Return the Flask app serving this account."""
        app = Flask(__name__)
        # Meta documents rows a request, not bytes: 10,000 rows of eight hashes is ~5 MB.
        app.config["MAX_FORM_MEMORY_SIZE"] = MAX_BYTES
        app.add_url_rule("/<version>/<node>", "node", self._node, methods=["GET"])
        app.add_url_rule(
            "/<version>/<audience>/users", "users", self._users, methods=["POST", "DELETE"]
        )
        app.add_url_rule(
            "/<version>/<audience>/usersreplace", "replace", self._replace, methods=["POST"]
        )
        return app

    def _node(self, version: str, node: str) -> Response:
        refused = self._gate(version, node if node != "me" else None, "get")
        if refused:
            return refused
        fields = request.args.get("fields", "id").split(",")
        known = {"id": node, "name": self.names.get(node, "dmp system user")}
        if node == "me":
            known["id"] = "100000000000001"
        unknown = [f for f in fields if f not in known]
        if unknown:
            kind = "User" if node == "me" else "CustomAudience"
            return invalid(
                f"Tried accessing nonexisting field ({unknown[0]}) on node type ({kind})"
            )
        return Response(json.dumps({f: known[f] for f in fields}), mimetype="application/json")

    def _users(self, version: str, audience: str) -> Response:
        write = self._write(version, audience, session_required=False)
        if isinstance(write, Response):
            return write
        schema, rows, session = write
        op = "add" if request.method == "POST" else "remove"
        good, answer = self._check_rows(schema, rows)
        with self.lock:
            members = self.audiences[audience]
            (members.update if op == "add" else members.difference_update)(good)
            self.schemas[audience] = schema
            self.log.append((op, schema, _as_sent(rows)))
        return _answer(audience, session, answer)

    def _replace(self, version: str, audience: str) -> Response:
        write = self._write(version, audience, session_required=True)
        if isinstance(write, Response):
            return write
        schema, rows, session = write
        assert session is not None  # required above
        good, answer = self._check_rows(schema, rows)
        with self.lock:
            problem = self._apply_replace(audience, session, _as_sent(rows), good)
            if problem:
                return invalid(problem)
            self.schemas[audience] = schema
            self.log.append(("replace", schema, _as_sent(rows)))
        return _answer(audience, session, answer)

    def _write(
        self, version: str, audience: str, *, session_required: bool
    ) -> tuple[tuple[str, ...], list[Any], dict[str, Any] | None] | Response:
        """Return a write's schema, rows and session, or the error answer."""
        refused = self._gate(version, audience, request.method.lower())
        params = _params()
        upload = refused or _upload(params)
        if isinstance(upload, Response):
            return upload
        session = _session(params.get("session"), required=session_required)
        if isinstance(session, Response):
            return session
        return upload[0], upload[1], session

    def _apply_replace(
        self, audience: str, session: dict[str, Any], sent: tuple[Any, ...], good: set[Member]
    ) -> str:
        """Fold one replace batch into its session; return why it is refused ('' if not)."""
        sid, seq = session["session_id"], session["batch_seq"]
        current = self.sessions.get(audience)
        if current is None or current.session_id != sid:
            current = ReplaceSession(sid)  # supersedes an older one once it is accepted
        if seq in current.batches:
            same = current.batches[seq] == sent
            return "" if same else f"batch_seq {seq} of session {sid} was sent with other rows"
        if current.finished:
            return f"session {sid} has ended (its last_batch_flag arrived)"
        expected = max(current.batches, default=0) + 1
        if seq != expected:
            return f"batch_seq {seq} is out of order in session {sid}: expected {expected}"
        self.sessions[audience] = current
        current.batches[seq] = sent
        current.members |= good
        if session.get("last_batch_flag"):
            current.finished = True
            self.audiences[audience] = set(current.members)
        return ""

    def _gate(self, version: str, audience: str | None, verb: str) -> Response | None:
        """Return the error answer for a bad token, version or audience (None: all good)."""
        token = _token()
        if not token:
            return graph_error("An access token is required to request this resource.", 104)
        if token != self.token:
            return graph_error("Invalid OAuth access token - Cannot parse access token", 190)
        if _version(version) < self.oldest:
            message = "(#2635) You are calling a deprecated version of the Ads API."
            return graph_error(message, 2635)
        if audience is not None and audience not in self.audiences:
            message = (
                f"Unsupported {verb} request. Object with ID '{audience}' does not exist, cannot "
                "be loaded due to missing permissions, or does not support this operation."
            )
            return graph_error(message, 100, kind="GraphMethodException", error_subcode=33)
        return None

    def _check_rows(self, schema: tuple[str, ...], rows: list[Any]) -> tuple[set[Member], dict]:
        """Return the valid rows as members and the answer's counts and samples."""
        good: set[Member] = set()
        samples: dict[str, str] = {}
        bad = 0
        for row in rows:
            problem = _row_problem(schema, row)
            if problem is None:
                good.add(frozenset((k, v) for k, v in zip(schema, row, strict=True) if v))
                continue
            bad += 1
            if len(samples) < self.samples:
                samples.setdefault(*problem)
        counts = {"num_received": len(rows), "num_invalid_entries": bad}
        return good, counts | {"invalid_entry_samples": samples}


def _answer(audience: str, session: dict[str, Any] | None, counts: dict[str, Any]) -> Response:
    """Return the write's answer: audience, session and the counts of its rows."""
    ids = {"audience_id": audience, "session_id": str((session or {}).get("session_id", 0))}
    return Response(json.dumps(ids | counts), mimetype="application/json")


def _row_problem(schema: tuple[str, ...], row: Any) -> tuple[str, str] | None:
    """Return (offending value, reason) for an invalid row (None: valid)."""
    if not isinstance(row, list) or not all(isinstance(v, str) for v in row):
        return json.dumps(row), "a row must be a list of strings"
    first = next((v for v in row if v), "")
    if len(row) != len(schema):
        return first, f"the row has {len(row)} values for {len(schema)} keys"
    if not first:
        return "", "the row has no value for any key"
    for key, value in zip(schema, row, strict=True):
        if value and key not in PLAIN and not _HEX64.fullmatch(value):
            return value, f"Invalid format for {key}: expected a SHA-256 hash in lowercase hex"
        if value == EMPTY_SHA256:
            return value, f"{key} is the hash of an empty value: leave it blank"
    return None


def _upload(params: dict[str, Any]) -> tuple[tuple[str, ...], list[Any]] | Response:
    """Return the payload's schema and rows, or the error answer."""
    payload = _json_param(params.get("payload"))
    if not isinstance(payload, dict):
        return invalid("payload must be a JSON object with schema and data")
    schema, data = payload.get("schema"), payload.get("data")
    if isinstance(schema, str) and schema in SHORT_SCHEMAS and isinstance(data, list):
        schema, data = [SHORT_SCHEMAS[schema]], [[v] for v in data]
    if not isinstance(schema, list) or not schema or not all(k in KEYS for k in schema):
        return invalid(f"schema must be a list of keys among {', '.join(KEYS)}: {schema!r}")
    if len(set(schema)) != len(schema):
        return invalid("schema names a key twice")
    if not isinstance(data, list) or not data:
        return invalid("payload data must be a non-empty list of rows")
    if len(data) > MAX_ROWS:
        return invalid(f"payload data has {len(data)} rows: at most {MAX_ROWS} per request")
    return tuple(schema), data


def _session(raw: Any, *, required: bool) -> dict[str, Any] | Response | None:
    """Return the session parameter checked for shape (None if absent and optional)."""
    if raw is None:
        return invalid("session is required") if required else None
    session = _json_param(raw)
    sid = session.get("session_id") if isinstance(session, dict) else None
    if not isinstance(sid, int) or isinstance(sid, bool) or not 0 < sid < 2**63:
        return invalid("session.session_id must be a positive 64-bit integer")
    seq = session.get("batch_seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return invalid("session.batch_seq must be an integer from 1")
    if not isinstance(session.get("last_batch_flag", False), bool):
        return invalid("session.last_batch_flag must be a boolean")
    return session


def _params() -> dict[str, Any]:
    """Return the request's parameters: query, then form fields or a JSON body."""
    params: dict[str, Any] = dict(request.args)
    if request.is_json:
        params.update(request.get_json(silent=True) or {})
    else:
        params.update(request.form)
    return params


def _token() -> str:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme in ("Bearer", "OAuth") and value:
        return value
    return str(_params().get("access_token") or "")


def _json_param(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _as_sent(rows: list[Any]) -> tuple[Any, ...]:
    return tuple(tuple(r) if isinstance(r, list) else r for r in rows)


def _version(text: str) -> tuple[int, int]:
    found = _VERSION.fullmatch(text)
    return (int(found[1]), int(found[2])) if found else (0, 0)
