"""The pull API for ad tools: audiences, their members and their changes (partner keys).

- ``GET /api/v1/audiences`` lists the audiences (segment ids) shared with the key, each
  with the newest run holding it and its member count there. That count is "up to": the
  rows a partner gets are the members with the ``ads`` consent for the identifier asked,
  which is read as they are sent. No segment names (see :mod:`dmp.web.lookup`).
- ``GET /api/v1/audiences/<sid>/members?id=uid|email_sha256&format=json|csv|parquet
  &limit=&cursor=`` sends one run's members, a page of ``limit`` persons of the run at a
  time (persons, not rows: a person brings no row without the consent, and one per
  consented cookie with ``id=uid``). The first page names the newest run; every cursor
  keeps to that run, whatever runs land meanwhile, and each page pins the run's members
  file for :data:`dmp.membership.runs.PIN_SECONDS` more. A run whose file is gone is a
  410: start again without a cursor. The last page gives no next cursor but a *since*
  cursor: the state the partner now holds.
- ``GET /api/v1/audiences/<sid>/changes?since=<cursor>`` sends who entered and who left
  between the since cursor's run and the newest one (the net change of each person, from
  the runs' change files), then a since cursor for the next call. It also re-checks the
  consent of a slice of the members and sends a left row for each identifier whose
  ``ads`` consent was withdrawn (:mod:`dmp.web.audiencefeeds` says why and at what cost).

Cursors are opaque and signed (:mod:`dmp.web.audiencecursors`). With ``format=json`` the
next and since cursors are in the body; with every format they are in ``X-Next-Cursor``
(and ``Link: <…>; rel="next"``) and ``X-Since-Cursor``, which are known before the first
row is sent: a page's end is found in the members file before Redis is read
(:mod:`dmp.web.audiencefiles`). Answers stream (:mod:`dmp.web.audienceformats`).

An audience not shared with the key is a 403, whether or not it exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from itertools import chain

import polars as pl
import redis
from flask import Response, jsonify, request, url_for
from werkzeug.wsgi import ClosingIterator

from dmp.access.apikeys import Scope, hash_secret
from dmp.config import Config
from dmp.membership import results
from dmp.membership.runs import pin_members
from dmp.storage import keyspace
from dmp.web import audiencefeeds as feeds
from dmp.web.audiencecursors import Cursor, decode_cursor, encode_cursor, installation_secret
from dmp.web.audiencefiles import MemberFile, net_changes
from dmp.web.audienceformats import MEDIA, stream
from dmp.web.audienceshapes import (
    AUDIENCES,
    CHANGES,
    CURSOR,
    CURSORS,
    FEED_ERRORS,
    FORMAT,
    JSON_LIMIT,
    KIND,
    LIMIT,
    MEMBERS,
    SINCE,
    Formats,
)
from dmp.web.auth import bearer_token, scoped_blueprint
from dmp.web.deps import current_deps
from dmp.web.problems import Problem
from dmp.web.segmentshapes import SID
from dmp.web.spec import NO_KEY, UNAVAILABLE, Reply, describe

bp = scoped_blueprint("audiences", __name__, Scope.PARTNER, url_prefix="/api/v1")


def _shared(r: redis.Redis) -> list[str]:
    """Return the audiences shared with the request's partner key (checked by the blueprint)."""
    key = bearer_token(request.authorization)
    raw = r.hget(keyspace.api_key(hash_secret(key)), "audiences") or ""
    return sorted(a for a in raw.split(",") if a)


def _allow(r: redis.Redis, sid: str) -> None:
    if sid not in _shared(r):
        raise Problem(403, "Forbidden", f"audience {sid!r} is not shared with this key")


@bp.get("/audiences")
@describe(
    tag="audiences",
    security=("partnerKey",),
    replies={200: Reply("The audiences shared.", schema=AUDIENCES), 401: NO_KEY, 503: UNAVAILABLE},
)
def audiences_list() -> Response:
    """Return the audiences shared with the key: each one's newest run (id and as-of time)
    and its members there. Members are counted before consent: the rows sent are those
    with the ads consent for the identifier asked."""
    deps = current_deps()
    run = results.latest_run(deps.config)
    out = []
    for sid in _shared(deps.redis):
        held = run is not None and sid in run["members"]
        out.append(
            {
                "id": sid,
                "run": {"id": run["run_id"], "as_of": run["as_of"]} if held else None,
                "members": run["members"][sid] if held else None,
            }
        )
    return jsonify({"audiences": out})


def _format(fmt: str | None, limit: int) -> str:
    fmt = fmt or "json"
    if fmt == "json" and limit > JSON_LIMIT:
        detail = f"limit may be at most {JSON_LIMIT} with format=json (csv and parquet stream)"
        raise Problem(400, "Invalid parameter", detail)
    return fmt


def _gone() -> Problem:
    detail = "the run this cursor pages through is gone: ask again without a cursor"
    return Problem(410, "Gone", detail, "cursor-expired")


def _open(config: Config, run_id: str) -> MemberFile | None:
    """Return a run's members file, pinned and open (None if it is gone)."""
    path = pin_members(config, run_id)
    try:
        return MemberFile(path) if path is not None else None
    except FileNotFoundError:  # removed between the pin and the open
        return None


def _start(config: Config, sid: str, kind: str | None) -> tuple[Cursor, MemberFile]:
    """Return the first position of a listing of the newest run, and its file open."""
    if kind is None:
        raise Problem(400, "Invalid parameter", "give id=uid or id=email_sha256")
    for _ in range(3):  # a newer run may land and prune between reading LATEST and the pin
        run = results.latest_run(config)
        if run is None or sid not in run["members"]:
            raise Problem(409, "Not ready", f"no segment run holds {sid!r} yet", "not-ready")
        members = _open(config, run["run_id"])
        if members is not None:
            return Cursor(sid, kind, run["run_id"]), members
    raise _gone()


def _checked(given: Cursor, sid: str, kind: str | None) -> Cursor:
    """Return a cursor sent for ``sid`` (400 if it is another audience's or kind's)."""
    if given.audience != sid:
        raise Problem(400, "Invalid cursor", "the cursor is of another audience")
    if kind is not None and kind != given.kind:
        raise Problem(400, "Invalid cursor", f"the cursor is of id={given.kind}")
    return given


@bp.get("/audiences/<sid>/members")
@describe(
    tag="audiences",
    params=(SID, KIND, FORMAT, LIMIT, CURSOR),
    security=("partnerKey",),
    replies={200: Formats("A page of members.", MEMBERS, CURSORS), **FEED_ERRORS},
)
def audience_members(
    sid: str, id: str | None, format: str | None, limit: int, cursor: str | None
) -> Response:
    """Send a page of an audience's members in one run: one row per identifier with the
    ads consent. Without a cursor the page is the first of the newest run; each cursor
    keeps to its run, pinned for an hour after each page (410 once it is gone)."""
    deps = current_deps()
    r, fmt = deps.redis, _format(format, limit)
    _allow(r, sid)
    secret = installation_secret(r)
    if cursor is None:
        at, members = _start(deps.config, sid, id)
    else:
        at = _checked(decode_cursor(secret, cursor), sid, id)
        if at.done or at.since_run:
            detail = "a changes cursor: pass it as since= to the changes feed"
            raise Problem(400, "Invalid cursor", detail)
        found = _open(deps.config, at.run)
        if found is None:
            raise _gone()
        members = found
    end, more = members.bound(sid, at.after, limit)
    rows = feeds.member_rows(r, members, sid, at.after, end, at.kind)
    after = replace(at, after=end) if more else None
    since = None if more else replace(at, after="", done=True)
    head = {"audience": sid, "run": at.run, "id": at.kind}
    tokens = _tokens(secret, after, since)
    return _answer(fmt, limit, (at.kind,), rows, head, tokens, members)


def _changes_at(config: Config, given: Cursor) -> Cursor:
    """Return the position a changes page starts from: a since cursor starts a listing
    up to the newest run; a changes page's next cursor goes on with its listing."""
    if given.since_run:
        return given
    if not given.done:
        detail = "a members page's cursor: page to the end, then pass the last page's since"
        raise Problem(400, "Invalid cursor", detail)
    run = results.latest_run(config)
    newest = given.run if run is None or run["run_id"] < given.run else run["run_id"]
    return Cursor(given.audience, given.kind, newest, "", given.run, given.recheck)


@bp.get("/audiences/<sid>/changes")
@describe(
    tag="audiences",
    params=(SID, SINCE, KIND, FORMAT, LIMIT),
    security=("partnerKey",),
    replies={200: Formats("A page of changes.", CHANGES, CURSORS), **FEED_ERRORS},
)
def audience_changes(
    sid: str, since: str, id: str | None, format: str | None, limit: int
) -> Response:
    """Send who entered and who left an audience since a cursor's run: entered with the
    ads consent now; left with the identifiers a partner may hold, and for those who
    withdrew ads while staying (a slice of the members re-checked each listing)."""
    deps = current_deps()
    r, fmt = deps.redis, _format(format, limit)
    _allow(r, sid)
    secret = installation_secret(r)
    at = _changes_at(deps.config, _checked(decode_cursor(secret, since), sid, id))
    delta = net_changes(deps.config, sid, at.since_run, at.run)
    rest = delta.filter(pl.col("person_id") > at.after) if at.after else delta
    page, more = rest.head(limit), rest.height > limit
    rows: Iterable[feeds.Rows] = feeds.change_rows(r, page, at.kind)
    after = replace(at, after=page["person_id"][-1]) if more else None
    members = _open(deps.config, at.run)
    since = None  # a since cursor on the last page only
    if not more:
        recheck = at.recheck
        if members is not None:
            end, recheck = feeds.recheck_span(members, sid, at.recheck)
            rows = chain(rows, feeds.recheck_rows(r, members, sid, at.recheck, end, at.kind))
        since = Cursor(sid, at.kind, at.run, recheck=recheck, done=True)
    head = {"audience": sid, "run": at.run, "since_run": at.since_run, "id": at.kind}
    tokens = _tokens(secret, after, since)
    return _answer(fmt, limit, (at.kind, "change"), rows, head, tokens, members)


def _tokens(secret: bytes, *cursors: Cursor | None) -> tuple[str | None, ...]:
    return tuple(None if c is None else encode_cursor(secret, c) for c in cursors)


def _answer(
    fmt: str,
    limit: int,
    names: tuple[str, ...],
    rows: Iterable[feeds.Rows],
    head: dict[str, str],
    tokens: tuple[str | None, ...],
    members: MemberFile | None,
) -> Response:
    """Return the streaming answer, with the next and since cursors in its headers (and
    in a JSON body)."""
    after, since = tokens
    headers = {}
    if after is not None:
        args = {"sid": head["audience"], "format": fmt, "limit": limit, "_external": True}
        args |= {"cursor": after} if "since_run" not in head else {"since": after}
        headers["X-Next-Cursor"] = after
        headers["Link"] = f'<{url_for(request.endpoint or "", **args)}>; rel="next"'
    if since is not None:
        headers["X-Since-Cursor"] = since
    body = stream(fmt, names, rows, head, {"next": after, "since": since})
    closing = ClosingIterator(body, [members.close] if members is not None else [])
    return Response(closing, mimetype=MEDIA[fmt], headers=headers)
