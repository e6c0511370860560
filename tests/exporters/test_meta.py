"""Meta Custom Audiences against a contract server speaking the Graph API over a socket."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator

import pytest
import requests

from dmp.membership.audience import Contact
from exporters.destination import Batch, MissingSecret, Op, Refused, Row, Settings, Unavailable
from exporters.meta import MAX_ROWS, MetaAudience, outcome_of, session_id
from exporters.metarows import SCHEMA, payload_json
from tests.exporters.contracts import meta as graph_api
from tests.exporters.contracts.meta import MetaGraph
from tests.exporters.contracts.server import ContractServer

TOKEN = "EAAGdmpTestToken0123456789abcdefSECRET"
TOKEN_ENV = "DMP_TEST_META_TOKEN"
WEBINAR, PRICING = "23850000000000001", "23850000000000002"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def graph() -> MetaGraph:
    """Return an ad account holding two empty Custom Audiences."""
    account = MetaGraph(TOKEN)
    account.create_audience(WEBINAR, "Webinar leads")
    account.create_audience(PRICING, "Pricing page visitors")
    return account


@pytest.fixture
def server(graph: MetaGraph) -> Iterator[ContractServer]:
    """Serve the account's Graph API on a local socket."""
    with ContractServer(graph.app()) as running:
        yield running


@pytest.fixture
def meta(server: ContractServer, monkeypatch: pytest.MonkeyPatch) -> MetaAudience:
    """Return the destination, pointed at the contract server, its token in the env."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return destination(server)


@pytest.fixture
def encoder() -> MetaAudience:
    """Return the destination for encoding only (no server, no token needed)."""
    return MetaAudience(Settings("meta-test", "meta", ("webinar",)))


def destination(server: ContractServer, **options: str) -> MetaAudience:
    base = {"base_url": server.url, "retry_base": "0.01", "retry_attempts": "4"}
    base |= {"token_env": TOKEN_ENV, "audience.webinar": WEBINAR, "audience.pricing": PRICING}
    return MetaAudience(
        Settings("meta-test", "meta", ("webinar", "pricing"), options=base | options)
    )


def batch(op: Op, rows: list[Row], number: int = 1, last: bool = True, total: int = 0) -> Batch:
    return Batch(op, "webinar", WEBINAR, rows, number, last, "sync-1", total or len(rows))


def leads(n: int, start: int = 0) -> list[Contact]:
    return [
        Contact(f"p{i}", email=f"lead{i}@example.com", first_name="Ada", country="DE")
        for i in range(start, start + n)
    ]


def rows_of(meta: MetaAudience, contacts: list[Contact]) -> list[Row]:
    return [row for row in meta.encode(contacts) if row is not None]


def test_email_is_trimmed_lowercased_and_hashed(encoder: MetaAudience) -> None:
    """EMAIL is the SHA-256 of the trimmed, lowercased address; blank keys stay ''."""
    (row,) = encoder.encode([Contact("p1", email="  Jane.Doe@Example.COM ")])
    assert row is not None
    assert dict(zip(SCHEMA, row, strict=True)) == {
        "EXTERN_ID": "",
        "EMAIL": sha("jane.doe@example.com"),
        "PHONE": "",
        "FN": "",
        "LN": "",
        "CT": "",
        "ZIP": "",
        "COUNTRY": "",
    }


@pytest.mark.parametrize(
    ("phone", "digits"),
    [
        ("+1 (650) 555-1212", "16505551212"),
        ("+49 170 1234567", "491701234567"),
        ("0049 170 1234567", "491701234567"),
    ],
)
def test_phone_is_digits_with_country_code(encoder: MetaAudience, phone: str, digits: str) -> None:
    """PHONE is hashed as digits only, country code first, no '+' and no leading zeros."""
    (row,) = encoder.encode([Contact("p1", phones=(phone,))])
    assert row is not None and row[SCHEMA.index("PHONE")] == sha(digits)
    assert row[SCHEMA.index("EMAIL")] == ""


def test_names_city_zip_country_and_extern_id(encoder: MetaAudience) -> None:
    """Names and city lose punctuation and spaces (umlauts stay, NFC); a country name
    becomes its ISO code; ZIP loses spaces (US: five digits); EXTERN_ID is not hashed."""
    contact = Contact(
        "p1",
        email="a@example.com",
        external_id="crm-0042",
        first_name="Ju\u0308rgen",  # decomposed ü
        last_name="O'Brien-Smith",
        city="Frankfurt am Main",
        postal_code="60 311",
        country="Deutschland",
    )
    row = dict(zip(SCHEMA, encoder.encode([contact])[0] or (), strict=True))
    assert row["EXTERN_ID"] == "crm-0042"
    assert row["FN"] == sha("jürgen")
    assert row["LN"] == sha("obriensmith")
    assert row["CT"] == sha("frankfurtammain")
    assert row["ZIP"] == sha("60311")
    assert row["COUNTRY"] == sha("de")
    us = Contact("p2", email="b@example.com", postal_code="94025-1234", country="US")
    assert encoder.encode([us])[0][SCHEMA.index("ZIP")] == sha("94025")  # type: ignore[index]


def test_unknown_country_is_left_blank(encoder: MetaAudience) -> None:
    """A value that normalises to nothing is a blank key, never the hash of ''."""
    (row,) = encoder.encode([Contact("p1", email="a@example.com", country="Atlantis", city="!")])
    assert row is not None
    assert row[SCHEMA.index("COUNTRY")] == "" and row[SCHEMA.index("CT")] == ""


def test_contact_without_consented_email_or_phone_gets_no_row(encoder: MetaAudience) -> None:
    """Names, address, an external id or cookies alone give None: nothing to match on."""
    contacts = [
        Contact("p1", first_name="Ada", last_name="Lovelace", city="London", country="GB"),
        Contact("p2", uids=("cookie-1",), external_id="crm-1"),
        Contact("p3", email="ok@example.com"),
    ]
    rows = encoder.encode(contacts)
    assert rows[:2] == [None, None] and rows[2] is not None


def test_add_then_remove_leaves_the_audience_empty(
    meta: MetaAudience, graph: MetaGraph, server: ContractServer
) -> None:
    """An ADD puts the rows in the audience, a REMOVE of the same rows takes them out;
    the token travels in the multipart body, never in the URL."""
    rows = rows_of(meta, leads(3))
    assert meta.send(batch(Op.ADD, rows)).failed == {}
    assert graph.members(WEBINAR, SCHEMA) == set(rows)
    assert meta.send(batch(Op.REMOVE, rows)).failed == {}
    assert graph.members(WEBINAR, SCHEMA) == set()
    (post,) = server.requests_to("POST", f"/{WEBINAR}/users")
    (delete,) = server.requests_to("DELETE", f"/{WEBINAR}/users")
    for seen in (post, delete):
        assert seen.headers["Content-Type"].startswith("multipart/form-data")
        assert "access_token" not in seen.query and TOKEN.encode() in seen.body
    assert graph.acknowledged(SCHEMA) == [("add", tuple(rows)), ("remove", tuple(rows))]


def test_oversize_batch_is_refused_before_any_request(
    meta: MetaAudience, server: ContractServer
) -> None:
    """More than 10,000 rows never go in one request: the batch is refused unsent."""
    row = rows_of(meta, leads(1))[0]
    with pytest.raises(Refused, match="10001 rows"):
        meta.send(batch(Op.ADD, [row] * (MAX_ROWS + 1)))
    assert server.seen == []


def test_full_batch_of_rich_rows_goes_in_one_request(
    meta: MetaAudience, graph: MetaGraph, server: ContractServer
) -> None:
    """10,000 rows with every key (about 5 MB) are one accepted request."""
    contacts = [
        Contact(
            f"p{i}",
            email=f"lead{i}@example.com",
            phones=(f"+49170{i:07d}",),
            external_id=f"crm-{i}",
            first_name="Grete",
            last_name=f"Müller{i}",
            city="Köln",
            postal_code="50667",
            country="Deutschland",
        )
        for i in range(MAX_ROWS)
    ]
    rows = rows_of(meta, contacts)
    assert meta.send(batch(Op.ADD, rows)).failed == {}
    assert len(server.requests_to("POST", "/users")) == 1
    assert len(graph.members(WEBINAR, SCHEMA)) == MAX_ROWS


def raw_post(
    server: ContractServer, edge: str, payload: object, session: object = None
) -> requests.Response:
    """Post to the contract server as a client that may get the contract wrong."""
    fields = {"payload": json.dumps(payload), "access_token": TOKEN}
    if session is not None:
        fields["session"] = json.dumps(session)
    return requests.post(f"{server.url}/v25.0/{WEBINAR}/{edge}", data=fields, timeout=10)


EMAIL_ROW = {"schema": ["EXTERN_ID", "EMAIL"], "data": [["", sha("a@example.com")]]}


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (["", sha("a@example.com")[:63]], "Invalid format for EMAIL"),
        (["", sha("a@example.com").upper()], "Invalid format for EMAIL"),
        (["", graph_api.EMPTY_SHA256], "hash of an empty value"),
        ([sha("a@example.com")], "1 values for 2 keys"),
        (["", ""], "no value for any key"),
    ],
)
def test_contract_server_counts_malformed_rows(
    server: ContractServer, graph: MetaGraph, row: list[str], reason: str
) -> None:
    """The contract server counts a malformed row as invalid, with a reason, unapplied."""
    answer = raw_post(server, "users", {"schema": ["EXTERN_ID", "EMAIL"], "data": [row]})
    assert answer.status_code == 200
    body = answer.json()
    assert body["num_received"] == 1 and body["num_invalid_entries"] == 1
    assert any(reason in said for said in body["invalid_entry_samples"].values())
    assert graph.members(WEBINAR) == set()


@pytest.mark.parametrize(
    ("edge", "payload", "session"),
    [
        ("users", {"schema": ["EMAIL", "NAME"], "data": [["", ""]]}, None),
        ("users", {"schema": ["EMAIL", "EMAIL"], "data": [["", ""]]}, None),
        ("users", {"schema": ["EMAIL"], "data": []}, None),
        ("users", {"schema": ["EMAIL"], "data": [[sha("a@example.com")]] * (MAX_ROWS + 1)}, None),
        ("usersreplace", EMAIL_ROW, None),
        ("usersreplace", EMAIL_ROW, {"session_id": "12", "batch_seq": 1}),
        ("usersreplace", EMAIL_ROW, {"session_id": 2**64, "batch_seq": 1}),
        ("usersreplace", EMAIL_ROW, {"session_id": 12, "batch_seq": 0}),
    ],
    ids=[
        "unknown-key",
        "key-twice",
        "no-rows",
        "10001-rows",
        "no-session",
        "id-text",
        "id-too-big",
        "seq-0",
    ],
)
def test_contract_server_refuses_malformed_requests(
    server: ContractServer, edge: str, payload: object, session: object
) -> None:
    """The contract server answers Meta's code 100 to a request breaking the contract."""
    answer = raw_post(server, edge, payload, session)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 100


def test_invalid_rows_come_back_as_failed(meta: MetaAudience, graph: MetaGraph) -> None:
    """Rows Meta calls invalid are in Outcome.failed with Meta's reason, and not held."""
    rows = rows_of(meta, leads(4))
    rows[1] = ("", "NOT-A-HASH", "", "", "", "", "", "")
    rows[3] = ("", rows[3][1].upper(), "", "", "", "", "", "")
    outcome = meta.send(batch(Op.ADD, rows))
    assert set(outcome.failed) == {1, 3}
    assert "Invalid format for EMAIL" in outcome.failed[1]
    assert graph.members(WEBINAR, SCHEMA) == {rows[0], rows[2]}


def test_unsampled_invalid_rows_are_not_claimed_sent(meta: MetaAudience, graph: MetaGraph) -> None:
    """When Meta counts more invalid rows than it samples, no unnamed row counts as sent."""
    graph.samples = 1
    rows = rows_of(meta, leads(4))
    rows[0] = ("", "bad-one", "", "", "", "", "", "")
    rows[2] = ("", "bad-two", "", "", "", "", "", "")
    outcome = meta.send(batch(Op.ADD, rows))
    assert set(outcome.failed) == {0, 1, 2, 3}
    assert outcome.failed[0].startswith("Meta: ")
    assert "not confirmed" in outcome.failed[2]


def test_rows_meta_did_not_confirm_are_not_claimed_sent() -> None:
    """Fewer rows received than sent, or samples given as a list, leave no row unnamed
    counted as sent."""
    rows = [("", sha(f"{i}@example.com"), "", "", "", "", "", "") for i in range(3)]
    short = outcome_of(rows, {"num_received": 2, "num_invalid_entries": 0})
    assert set(short.failed) == {0, 1, 2} and "received 2 of 3" in short.failed[0]
    listed = outcome_of(
        rows, {"num_received": 3, "num_invalid_entries": 1, "invalid_entry_samples": [rows[1][1]]}
    )
    assert listed.failed == {1: "Meta: invalid entry"}
    assert outcome_of(rows, {"num_received": 3, "num_invalid_entries": 0}).failed == {}


@pytest.mark.parametrize(
    "fault",
    [
        graph_api.throttled(4),
        graph_api.throttled(17),
        graph_api.throttled(613),
        graph_api.throttled(80003),
        graph_api.server_error(),
    ],
    ids=["code-4", "code-17", "code-613", "code-80003", "http-500"],
)
def test_throttling_and_outages_are_retried(
    meta: MetaAudience, graph: MetaGraph, server: ContractServer, fault: graph_api.Fault
) -> None:
    """Rate-limit codes (HTTP 400) and a 500 are retried with backoff, then succeed."""
    server.inject(fault, fault)
    rows = rows_of(meta, leads(2))
    assert meta.send(batch(Op.ADD, rows)).failed == {}
    assert len(server.requests_to("POST", "/users")) == 3
    assert graph.members(WEBINAR, SCHEMA) == set(rows)
    assert graph.acknowledged(SCHEMA) == [("add", tuple(rows))]


def test_throttle_that_never_ends_raises_unavailable(
    meta: MetaAudience, server: ContractServer
) -> None:
    """A throttle outlasting every attempt raises Unavailable (the next sync resumes)."""
    server.inject(*[graph_api.throttled(80003)] * 4)
    with pytest.raises(Unavailable, match="after 4 attempts"):
        meta.send(batch(Op.ADD, rows_of(meta, leads(1))))


def test_throttle_asking_for_minutes_stops_the_sync(
    meta: MetaAudience, server: ContractServer
) -> None:
    """X-Business-Use-Case-Usage asking for 10 minutes: Unavailable at once, no busy retry."""
    server.inject(graph_api.throttled(80003, regain_minutes=10))
    with pytest.raises(Unavailable, match="wait 600 s"):
        meta.send(batch(Op.ADD, rows_of(meta, leads(1))))
    assert len(server.seen) == 1


def test_expired_token_is_refused_without_the_token(
    meta: MetaAudience, server: ContractServer
) -> None:
    """Code 190 raises Refused saying to renew the token, and never showing it."""
    server.inject(graph_api.expired_token())
    with pytest.raises(Refused) as caught:
        meta.send(batch(Op.ADD, rows_of(meta, leads(1))))
    assert "190" in str(caught.value) and "renew" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(server.seen) == 1  # not retried


def test_replace_session_replaces_the_audience(
    meta: MetaAudience, graph: MetaGraph, server: ContractServer
) -> None:
    """A replace session in two batches leaves exactly its rows in the audience."""
    old = rows_of(meta, leads(3))
    meta.send(batch(Op.ADD, old))
    new = rows_of(meta, leads(4, start=2))
    meta.send(batch(Op.REPLACE, new[:2], number=1, last=False, total=4))
    assert graph.members(WEBINAR, SCHEMA) == set(old)  # not before the last batch
    meta.send(batch(Op.REPLACE, new[2:], number=2, last=True, total=4))
    assert graph.members(WEBINAR, SCHEMA) == set(new)
    sessions = server.requests_to("POST", "/usersreplace")
    assert len(sessions) == 2
    expected = session_id(batch(Op.REPLACE, new))
    assert 0 < expected < 2**63
    for number, seen in enumerate(sessions, start=1):
        assert f'"session_id":{expected},"batch_seq":{number}'.encode() in seen.body


def test_replace_batch_resent_is_answered_and_a_gap_is_refused(
    meta: MetaAudience, graph: MetaGraph
) -> None:
    """A batch sent again (a crash before its checkpoint) is idempotent; a batch_seq gap
    is refused clearly."""
    rows = rows_of(meta, leads(4))
    first = batch(Op.REPLACE, rows[:2], number=1, last=False, total=4)
    meta.send(first)
    assert meta.send(first).failed == {}
    with pytest.raises(Refused, match="out of order"):
        meta.send(batch(Op.REPLACE, rows[2:], number=3, last=True, total=4))
    meta.send(batch(Op.REPLACE, rows[2:], number=2, last=True, total=4))
    assert graph.members(WEBINAR, SCHEMA) == set(rows)


def test_check_lists_segments_without_an_audience() -> None:
    """check() names each segment lacking audience.<id>, and a missing token_env."""
    settings = Settings("ads", "meta", ("webinar", "pricing"), options={"audience.webinar": "42"})
    problems = MetaAudience.check(settings)
    assert any("token_env" in p for p in problems)
    assert any("audience.pricing" in p for p in problems)
    assert not any("audience.webinar" in p for p in problems)
    good = {"token_env": TOKEN_ENV, "audience.webinar": "42", "audience.pricing": "43"}
    assert MetaAudience.check(Settings("ads", "meta", ("webinar", "pricing"), options=good)) == []


def test_test_reads_every_audience(meta: MetaAudience, server: ContractServer) -> None:
    """test() proves the token and each configured audience, the token in a header."""
    assert meta.test() == (
        "token valid; 2 audiences reachable: "
        f"Webinar leads ({WEBINAR}), Pricing page visitors ({PRICING})"
    )
    for seen in server.requests_to("GET", WEBINAR) + server.requests_to("GET", PRICING):
        assert "access_token" not in seen.query and seen.query["fields"] == "id,name"


def test_test_fails_clearly_with_a_bad_token(
    server: ContractServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong token makes test() raise Refused naming code 190, not the token."""
    monkeypatch.setenv(TOKEN_ENV, "EAAGwrongTokenXYZ")
    with pytest.raises(Refused) as caught:
        destination(server).test()
    assert "190" in str(caught.value) and "EAAGwrongTokenXYZ" not in str(caught.value)


def test_unknown_audience_and_old_version_are_refused(
    meta: MetaAudience, server: ContractServer
) -> None:
    """An audience the token cannot use, or a deprecated api_version, raise Refused
    naming the option to fix."""
    stray = Batch(Op.ADD, "webinar", "999", rows_of(meta, leads(1)), 1, True, "s", 1)
    with pytest.raises(Refused, match="audience"):
        meta.send(stray)
    with pytest.raises(Refused, match="api_version"):
        destination(server, api_version="v12.0").send(batch(Op.ADD, rows_of(meta, leads(1))))


def test_missing_token_variable_is_a_missing_secret(
    server: ContractServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the token's environment variable, send raises MissingSecret unsent."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(MissingSecret, match=TOKEN_ENV):
        destination(server).send(batch(Op.ADD, [("", sha("a@b.c"), "", "", "", "", "", "")]))
    assert server.seen == []


def test_token_never_in_exceptions_logs_or_repr(
    meta: MetaAudience, server: ContractServer, caplog: pytest.LogCaptureFixture
) -> None:
    """No exception text, log record (any level, any logger) or repr shows the token."""
    caplog.set_level(logging.DEBUG)
    texts = [repr(meta)]
    server.inject(graph_api.throttled(17), graph_api.server_error())
    meta.send(batch(Op.ADD, rows_of(meta, leads(2))))
    meta.test()
    for fault in (graph_api.expired_token(), *[graph_api.throttled(4)] * 4):
        server.inject(fault)
    for _ in range(2):
        with pytest.raises((Refused, Unavailable)) as caught:
            meta.send(batch(Op.ADD, rows_of(meta, leads(1))))
        texts.append(str(caught.value))
    assert len(caplog.records) > 3
    texts += [record.getMessage() for record in caplog.records]
    assert not [text for text in texts if TOKEN in text]


@pytest.mark.parametrize("external", ['id "7"', "id\\7", "id\x017", "id\u20287", "zürich-7"])
def test_an_id_json_must_escape_still_makes_valid_json(external: str) -> None:
    """An EXTERN_ID with a quote, a backslash or a control character leaves the joined
    fast path: the payload is valid JSON holding the id as it was."""
    row = (external, "a" * 64, "", "", "", "", "", "")
    assert json.loads(payload_json([row, row])) == {"schema": list(SCHEMA), "data": [list(row)] * 2}
