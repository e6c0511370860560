"""The pull API for ad tools: audiences shared with a partner key, their members by page
(JSON, CSV, Parquet; cookie ids or hashed emails) and their changes."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import time

import polars as pl
import pyarrow.parquet as pq
import pytest

from dmp.access import apikeys
from dmp.membership import results, runs
from dmp.people import consents
from dmp.people.identity import Identifier, IdKind
from dmp.storage import keyspace
from dmp.web import audienceformats
from tests.factories import NOW, apply_segments, bearer, make_hit, make_identify, send_hits

SEGMENTS = """
id: pricing
name: Looked at pricing
where: {did: {event: page, url_contains: /pricing}}
---
id: pro
name: Pro plan
where: {trait: {name: plan, eq: pro}}
---
id: secret
name: Not shared
where: {did: {event: page}}
"""
ANALYTICS_ONLY = {"analytics": True, "ads": False}
PRICING = "https://acme.de/pricing"
LATER = NOW + 60_000  # hits after the first ones (consent changes apply in event-time order)


def sha(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


@pytest.fixture
def people(redis, drain, config) -> None:
    """On /pricing, through the real worker and a segment run: c-both (ads for the cookie
    and for jana@acme.de), c-none (no ads), c-uid (ads for the cookie only: its email's
    owner gave none) and c-mail (ads for mia@acme.de, withdrawn for the cookie); c-pro
    (ads, plan pro) is in the pro segment."""
    apply_segments(redis, SEGMENTS)
    ads = {"ads": True}
    send_hits(
        redis,
        *(make_hit(uid=u, url=PRICING) for u in ("c-both", "c-uid", "c-mail")),
        make_hit(uid="c-none", url=PRICING, consent=ANALYTICS_ONLY),
        make_identify("jana@acme.de", uid="c-both")._replace(consent=ads),
        make_identify("uwe@acme.de", uid="c-uid"),
        make_identify("mia@acme.de", uid="c-mail")._replace(consent=ads),
        make_identify("pia@acme.de", uid="c-pro", plan="pro")._replace(consent=ads),
    )
    drain()
    send_hits(redis, make_hit(uid="c-mail", consent=ANALYTICS_ONLY, timestamp=LATER))
    drain()
    runs.run(redis, config)


@pytest.fixture
def partner(redis, people) -> str:
    """Return a partner key sharing pricing and pro (not secret)."""
    return apikeys.create_key(redis, apikeys.Scope.PARTNER, "DSP", ("pricing", "pro"))


def _get(client, key: str, path: str, **params):
    return client.get(f"/api/v1{path}", query_string=params, headers=bearer(key))


def _rows(got, fmt: str, kind: str) -> list:
    """Return the rows of an answer: identifiers, or (identifier, change) pairs."""
    assert got.status_code == 200, got.get_data(as_text=True)
    assert got.mimetype == audienceformats.MEDIA[fmt]
    if fmt == "json":
        body = got.get_json()
        if "members" in body:
            return body["members"]
        return [(row[kind], row["change"]) for row in body["changes"]]
    if fmt == "csv":
        header, *lines = got.get_data(as_text=True).splitlines()
        assert header.split(",")[0] == kind
        return [tuple(x.split(",")) if "," in x else x for x in lines]
    table = pq.read_table(io.BytesIO(got.data))
    if table.num_columns == 1:
        return table.column(kind).to_pylist()
    ids, changes = table.column(kind).to_pylist(), table.column("change").to_pylist()
    return list(zip(ids, changes, strict=True))


def _listing(client, key: str, sid: str, kind: str, fmt: str = "json", limit: int = 10_000):
    """Return every row of a members listing, its pages, and its last page's since cursor."""
    rows, pages, cursor = [], 0, None
    while True:
        params = {"format": fmt, "limit": limit, "id": kind}
        got = _get(
            client,
            key,
            f"/audiences/{sid}/members",
            **params,
            **({"cursor": cursor} if cursor else {}),
        )
        rows += _rows(got, fmt, kind)
        pages += 1
        cursor = got.headers.get("X-Next-Cursor")
        if cursor is None:
            return rows, pages, got.headers["X-Since-Cursor"]


def test_the_list_shows_only_the_audiences_shared(client, partner, config):
    """Each shared audience with the newest run and its member count; no other segment."""
    got = _get(client, partner, "/audiences")
    assert got.status_code == 200 and got.headers["Cache-Control"] == "no-store"
    run = results.latest_run(config)
    assert got.get_json() == {
        "audiences": [
            {"id": "pricing", "run": {"id": run["run_id"], "as_of": run["as_of"]}, "members": 4},
            {"id": "pro", "run": {"id": run["run_id"], "as_of": run["as_of"]}, "members": 1},
        ]
    }


@pytest.mark.parametrize("sid", ["secret", "no-such-segment"])
def test_an_audience_not_shared_is_403(client, partner, sid):
    """Existing or not, an audience the key does not share answers 403 problem+json."""
    since = "e30." + "A" * 43  # shaped like a cursor: sharing is checked before signatures
    for path, params in (("members", {"id": "uid"}), ("changes", {"since": since})):
        got = _get(client, partner, f"/audiences/{sid}/{path}", **params)
        assert got.status_code == 403 and got.mimetype == "application/problem+json"


def test_only_partner_keys_may_pull(client, redis, partner, admin_key, import_key):
    """No key, an admin or import key, a made-up or revoked key: 401 problem+json."""
    revoked = apikeys.create_key(redis, apikeys.Scope.PARTNER, "old", ("pricing",))
    apikeys.revoke_key(redis, apikeys.hash_secret(revoked)[:12])
    for key in ("", admin_key, import_key, "dmp_pa_made-up", revoked):
        for path in ("/audiences", "/audiences/pricing/members", "/audiences/pricing/changes"):
            got = _get(client, key, path, id="uid")
            assert got.status_code == 401 and got.mimetype == "application/problem+json"


EXPECTED = {
    "uid": ["c-both", "c-uid"],
    "email_sha256": sorted([sha("jana@acme.de"), sha("mia@acme.de")]),
}


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
@pytest.mark.parametrize("kind", ["uid", "email_sha256"])
def test_members_in_each_format_and_id_kind(client, partner, fmt, kind):
    """Only identifiers holding the ads consent themselves: no c-none, no uwe (the email of
    c-uid gave none), no c-mail (its browser withdrew ads), in every format."""
    rows, pages, since = _listing(client, partner, "pricing", kind, fmt)
    assert sorted(rows) == EXPECTED[kind] and pages == 1 and since


def test_a_json_page_names_its_run_and_cursors(client, partner, config):
    """The JSON body: audience, run, id, members, and next (null) and since on the last page."""
    body = _get(client, partner, "/audiences/pricing/members", id="uid").get_json()
    assert body["audience"] == "pricing" and body["id"] == "uid" and body["next"] is None
    assert body["run"] == results.latest_run(config)["run_id"] and body["since"]


def _write_run(config, as_of: int, members: dict[str, list[str]]) -> str:
    """Land a segment run's files as a run writes them (members, changes, manifest,
    LATEST, prune), without evaluating anything; return its id."""
    before = results.latest_members(config).collect()
    rows = [(sid, pid) for sid, pids in members.items() for pid in pids]
    frame = pl.DataFrame(rows, schema=["segment_id", "person_id"], orient="row").sort(
        "segment_id", "person_id"
    )
    run_id = runs._run_id(as_of)
    changes = runs._changes(before, frame, as_of, run_id, dict.fromkeys(members, 1))
    manifest = {
        "run_id": run_id,
        "as_of": as_of,
        "members": {s: len(p) for s, p in members.items()},
    }
    counts = pl.DataFrame(schema={"person_id": pl.Utf8})
    runs._write_run(config, manifest, frame, counts, changes)
    return run_id


def _consented(redis, *uids: str) -> None:
    """Make one person per cookie id, each with its browser's ads consent."""
    for uid in uids:
        ident = Identifier(IdKind.UID, uid)
        redis.hset(
            keyspace.person(f"p-{uid}"),
            mapping={
                "tier": "low",
                consents.state_field("ads", ident): consents.state_value(True, NOW),
            },
        )
        redis.sadd(keyspace.person(f"p-{uid}", "identifiers"), ident.text)


def test_paging_is_complete_and_stays_on_its_run(client, redis, config):
    """Pages of 7 of 50 members: every member once, in order, though a newer run with
    other members lands after the first page; csv pages follow the Link header alike."""
    apply_segments(redis, SEGMENTS)
    first = [f"u{i:03d}" for i in range(50)]
    _consented(redis, *first, *(f"v{i:03d}" for i in range(20)))
    _write_run(config, NOW, {"pricing": [f"p-{u}" for u in first]})
    key = apikeys.create_key(redis, apikeys.Scope.PARTNER, "DSP", ("pricing",))
    page = _get(client, key, "/audiences/pricing/members", id="uid", limit=7).get_json()
    _write_run(config, NOW + 1000, {"pricing": [f"p-v{i:03d}" for i in range(20)]})
    seen = list(page["members"])
    while page["next"]:
        page = _get(
            client, key, "/audiences/pricing/members", cursor=page["next"], limit=7
        ).get_json()
        seen += page["members"]
    assert seen == first  # the first run's, complete, no duplicates
    got = _get(client, key, "/audiences/pricing/members", id="uid", limit=7, format="csv")
    link = got.headers["Link"]
    assert link.endswith('>; rel="next"') and "cursor=" in link and "format=csv" in link
    nxt = client.get(link[1 : link.index(">")], headers=bearer(key))
    assert _rows(nxt, "csv", "uid") == [f"v{i:03d}" for i in range(7, 14)]


def test_a_pinned_run_outlives_newer_runs_and_an_unpinned_one_is_410(client, redis, config):
    """While a partner pages, the run's members file stays past KEEP_RUNS newer runs; once
    its pin is older than an hour, the next run removes it and the cursor answers 410."""
    apply_segments(redis, SEGMENTS)
    _consented(redis, "a1", "a2", "a3")
    old = _write_run(config, NOW, {"pricing": ["p-a1", "p-a2", "p-a3"]})
    key = apikeys.create_key(redis, apikeys.Scope.PARTNER, "DSP", ("pricing",))
    page = _get(client, key, "/audiences/pricing/members", id="uid", limit=1).get_json()
    for i in range(runs.KEEP_RUNS + 1):
        _write_run(config, NOW + 1000 * (i + 1), {"pricing": ["p-a1"]})
    page = _get(client, key, "/audiences/pricing/members", cursor=page["next"], limit=1).get_json()
    assert page["members"] == ["a2"] and page["run"] == old
    pin = results.segments_dir(config) / runs.PINS / old
    stale = time.time() - runs.PIN_SECONDS - 1
    os.utime(pin, (stale, stale))
    _write_run(config, NOW + 9000, {"pricing": ["p-a1"]})
    assert not (results.segments_dir(config) / f"members-{old}.parquet").exists()
    got = _get(client, key, "/audiences/pricing/members", cursor=page["next"])
    assert got.status_code == 410 and got.mimetype == "application/problem+json"


def _tampered(cursor: str) -> list[str]:
    body, mac = cursor.split(".")
    payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    forged = base64.urlsafe_b64encode(payload.replace(b'"pricing"', b'"pro"')).decode().rstrip("=")
    # The first character: the last one's two low bits are base64 padding, not MAC.
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    return [f"{forged}.{mac}", f"{body}.{flipped}", body + "x." + mac, cursor[:-3]]


def test_a_tampered_or_misused_cursor_is_400(client, partner):
    """A changed cursor, one of another audience, kind or listing: 400 problem+json."""
    page = _get(client, partner, "/audiences/pricing/members", id="uid", limit=1).get_json()
    since = _listing(client, partner, "pricing", "uid")[2]
    for bad in _tampered(page["next"]):
        got = _get(client, partner, "/audiences/pricing/members", cursor=bad)
        assert got.status_code == 400 and got.mimetype == "application/problem+json", bad
    misuses = [
        ("/audiences/pro/members", {"cursor": page["next"]}),
        ("/audiences/pricing/members", {"cursor": page["next"], "id": "email_sha256"}),
        ("/audiences/pricing/members", {"cursor": since}),
        ("/audiences/pricing/changes", {"since": page["next"]}),
        ("/audiences/pro/changes", {"since": since}),
    ]
    for path, params in misuses:
        got = _get(client, partner, path, **params)
        assert got.status_code == 400 and got.get_json()["title"] == "Invalid cursor", path


def test_changes_after_a_run_show_entered_and_left(client, redis, partner, drain, config):
    """Since the end of a listing: who entered with ads consent, who left the segment, and
    who withdrew ads while staying (the consent re-check), each with their identifiers."""
    since = _listing(client, partner, "pricing", "uid")[2]
    pro_since = _listing(client, partner, "pro", "email_sha256")[2]
    send_hits(
        redis,
        make_hit(uid="c-new", url=PRICING, timestamp=LATER),
        make_hit(uid="c-noads", url=PRICING, timestamp=LATER, consent=ANALYTICS_ONLY),
        make_hit(uid="c-both", consent=ANALYTICS_ONLY, timestamp=LATER),
        make_identify("pia@acme.de", uid="c-pro", plan="free")._replace(timestamp=LATER),
    )
    drain()
    runs.run(redis, config)
    got = _get(client, partner, "/audiences/pricing/changes", since=since, format="csv")
    # c-mail's cookie withdrew before the listing: the re-check names it again (removing
    # what is gone changes nothing); c-none's cookie never held ads, so it is never named.
    assert sorted(_rows(got, "csv", "uid")) == [
        ("c-both", "left"),
        ("c-mail", "left"),
        ("c-new", "entered"),
    ]
    pro = _get(client, partner, "/audiences/pro/changes", since=pro_since).get_json()
    assert pro["changes"] == [{"email_sha256": sha("pia@acme.de"), "change": "left"}]
    assert pro["since_run"] != pro["run"] and pro["next"] is None
    again = _get(client, partner, "/audiences/pro/changes", since=pro["since"]).get_json()
    assert again["changes"] == [] and again["since_run"] == again["run"] == pro["run"]


def test_changes_page_by_person_and_end_with_a_since_cursor(client, redis, config):
    """A delta of 30 persons in pages of 4: each person once; the last page's since."""
    apply_segments(redis, SEGMENTS)
    old, new = [f"o{i:02d}" for i in range(15)], [f"n{i:02d}" for i in range(15)]
    _consented(redis, *old, *new)
    _write_run(config, NOW, {"pricing": [f"p-{u}" for u in old]})
    key = apikeys.create_key(redis, apikeys.Scope.PARTNER, "DSP", ("pricing",))
    since = _listing(client, key, "pricing", "uid")[2]
    _write_run(config, NOW + 1000, {"pricing": [f"p-{u}" for u in new]})
    seen, cursor = [], since
    while cursor:
        got = _get(
            client, key, "/audiences/pricing/changes", since=cursor, limit=4, format="parquet"
        )
        seen += _rows(got, "parquet", "uid")
        cursor, last = got.headers.get("X-Next-Cursor"), got.headers.get("X-Since-Cursor")
    expected = [(u, "left") for u in old] + [(u, "entered") for u in new]
    assert sorted(seen) == sorted(expected) and len(seen) == len(expected) and last


@pytest.mark.parametrize(
    ("path", "params", "detail"),
    [
        ("members", {"id": "uid", "format": "xml"}, "format"),
        ("members", {"id": "phone"}, "id"),
        ("members", {}, "id=uid or id=email_sha256"),
        ("members", {"id": "uid", "limit": "0"}, "limit"),
        ("members", {"id": "uid", "limit": "ten"}, "limit"),
        ("members", {"id": "uid", "limit": "٣"}, "limit"),
        ("members", {"id": "uid", "limit": "1000001", "format": "csv"}, "limit"),
        ("members", {"id": "uid", "limit": "100001"}, "format=json"),
        ("members", {"cursor": "not a cursor"}, "cursor"),
        ("members", {"cursor": "a" * 5000 + ".b"}, "cursor"),
        ("changes", {}, "since is required"),
        ("changes", {"since": "<script>"}, "since"),
    ],
)
def test_bad_parameters_are_400(client, partner, path, params, detail):
    """Hostile, oversize and wrong-typed parameters: 400 problem+json naming the problem."""
    got = _get(client, partner, f"/audiences/pricing/{path}", **params)
    assert got.status_code == 400 and got.mimetype == "application/problem+json"
    assert detail in got.get_json()["detail"]


def test_an_audience_with_no_run_yet_is_409(client, redis):
    """Shared before any run holds it: 409, not an empty audience."""
    key = apikeys.create_key(redis, apikeys.Scope.PARTNER, "DSP", ("pricing",))
    got = _get(client, key, "/audiences/pricing/members", id="uid")
    assert got.status_code == 409 and got.mimetype == "application/problem+json"
    listed = _get(client, key, "/audiences").get_json()
    assert listed == {"audiences": [{"id": "pricing", "run": None, "members": None}]}


def test_parquet_is_written_in_row_groups_as_it_streams():
    """A row group goes out as soon as it is full, before the rows after it are read."""
    taken = []

    def chunks():
        for n in range(0, 140_000, 20_000):
            taken.append(n)
            yield ([f"u{i:06d}" for i in range(n, n + 20_000)],)

    pieces = audienceformats.stream("parquet", ["uid"], chunks(), {}, {})
    first = next(pieces)
    assert len(taken) == 4  # 80,000 rows: past ROW_GROUP (65,536), not the 140,000
    data = first + b"".join(pieces)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.num_rows == 140_000 and meta.num_row_groups == 2
    assert pq.read_table(io.BytesIO(data)).column("uid").to_pylist()[-1] == "u139999"


def test_removed_members_files_of_unpinned_runs_only(config, redis):
    """A run's prune keeps a pinned run's members file past KEEP_RUNS and removes the
    others' (the pin is what the pull API writes on each page)."""
    apply_segments(redis, SEGMENTS)
    first = _write_run(config, NOW, {"pricing": ["p-1"]})
    second = _write_run(config, NOW + 1, {"pricing": ["p-1"]})
    assert (
        runs.pin_members(config, first) == results.segments_dir(config) / f"members-{first}.parquet"
    )
    for i in range(runs.KEEP_RUNS):
        _write_run(config, NOW + 2 + i, {"pricing": ["p-1"]})
    folder = results.segments_dir(config)
    assert (folder / f"members-{first}.parquet").exists()
    assert not (folder / f"members-{second}.parquet").exists()
    assert runs.pin_members(config, second) is None


def test_members_stream_over_a_real_socket(live_url, partner):
    """Over HTTP the answer comes chunked (no Content-Length: it is sent as it is made)."""
    import requests

    url = f"{live_url}/api/v1/audiences/pricing/members"
    params = {"id": "email_sha256", "format": "csv"}
    with requests.get(url, params=params, headers=bearer(partner), stream=True, timeout=30) as got:
        assert got.status_code == 200 and got.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in got.headers and got.headers["X-Since-Cursor"]
        lines = got.text.splitlines()
    assert lines[0] == "email_sha256" and sorted(lines[1:]) == EXPECTED["email_sha256"]
