"""Google Customer Match: rows as Google normalises and hashes them, requests as the Data
Manager API takes them (against its contract server over a real socket), and the upload
CSV files."""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmp.membership.audience import Contact
from exporters.destination import Batch, MissingSecret, Op, Refused, Row, Settings, Unavailable
from exporters.google import GoogleCustomerMatch
from exporters.googlerows import normal_emails
from exporters.identifiers import google_email
from tests.exporters.contracts.google import TOKEN, USER_LIST, DataManager, exhausted, unavailable
from tests.exporters.contracts.server import ContractServer


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_TOKEN", TOKEN)


@pytest.fixture
def api() -> Iterator[tuple[DataManager, ContractServer]]:
    google = DataManager()
    with ContractServer(google.app) as server:
        yield google, server


def settings(url: str = "", segments: tuple[str, ...] = ("leads",), **extra: str) -> Settings:
    options = {
        "token_env": "GOOGLE_TOKEN",
        "operating_account_id": "123-456-7890",
        "audience.leads": USER_LIST,
        "base_url": url,
        "retry_base": "0.01",
        "retry_attempts": "4",
        **extra,
    }
    return Settings("google-ads", "google", segments, options=options)


def batch(rows: list[Row], op: Op = Op.ADD, target: str = USER_LIST) -> Batch:
    return Batch(op, "leads", target, rows, 1, True, "s1", len(rows))


def member(row: Row) -> frozenset[str]:
    """Return the identifiers the contract server holds for a row."""
    ids = {f"email:{row[0]}"} if row[0] else set()
    ids |= {f"phone:{p}" for p in row[1].split()}
    if row[2]:
        ids.add("address:" + "|".join(row[2:]))
    return frozenset(ids)


JANE = Contact(
    "p1",
    email="jane.doe@example.com",
    phones=("+491701234567",),
    first_name=" Jane ",
    last_name="Doe-Smith",
    country="Deutschland",
    postal_code=" 10115 ",
)


JANE_ROW = (sha("jane.doe@example.com"), "", "", "", "", "")


def test_emails_are_normalised_as_google_documents() -> None:
    """Emails lose whitespace and capitals; Gmail addresses also their dots and +suffix."""
    dest = GoogleCustomerMatch(settings())
    clean = [Contact("a", email="first.last@example.com"), Contact("b", email="j.doe+x@gmail.com")]
    messy = [
        Contact("c", email="  Jane.Doe+News@GMail.com "),
        Contact("d", email="A B@Example.org"),
    ]
    rows = dest.encode(clean) + dest.encode(messy)
    expected = ["first.last@example.com", "jdoe@gmail.com", "janedoe@gmail.com", "ab@example.org"]
    assert [row[0] for row in rows if row] == [sha(e) for e in expected]


@pytest.mark.parametrize(
    "emails",
    [
        ["a.b@example.com", "c@example.org"],
        ["a.b@example.com", "x.y+z@gmail.com", "q.r@googlemail.com", "m@hotmail.com"],
        [" a@example.com", "b@example.com\t"],
        ["a@example.com", "B@Example.com"],
        ["a@ex ample.com", "z\x1f@example.com"],
        ["jörg.x@example.de", "a@gmail.com"],
        ["", "a@example.com", ""],
        [],
    ],
)
def test_batch_shortcut_normalises_as_google_email(emails: list[str]) -> None:
    """Skipping work for batches already in Google's form changes no email."""
    contacts = [Contact(str(i), email=e) for i, e in enumerate(emails)]
    assert normal_emails(contacts) == [google_email(e) for e in emails]


def test_phones_and_names_hashed_region_and_postal_code_plain() -> None:
    """Phones are hashed in E.164 with '+', names lowercase; region and postal code stay
    plain (the region as its ISO code)."""
    [row] = GoogleCustomerMatch(settings()).encode([JANE])
    assert row == (
        sha("jane.doe@example.com"),
        sha("+491701234567"),
        sha("jane"),
        sha("doe-smith"),
        "DE",
        "10115",
    )


def test_address_only_with_all_four_parts() -> None:
    """An address goes only with first and last name, country and postal code; a contact
    with nothing else to match on has no row."""
    dest = GoogleCustomerMatch(settings())
    no_zip = Contact("a", email="a@example.com", first_name="A", last_name="B", country="DE")
    names_only = Contact("b", first_name="A", last_name="B", country="DE")
    address_only = Contact("c", first_name="A", last_name="B", country="at", postal_code="1010")
    rows = dest.encode([no_zip, names_only, address_only])
    assert rows[0] == (sha("a@example.com"), "", "", "", "", "")
    assert rows[1] is None
    assert rows[2] == ("", "", sha("a"), sha("b"), "AT", "1010")


def test_at_most_ten_identifiers_per_member(api: tuple[DataManager, ContractServer]) -> None:
    """Email, address and phones stay within Google's ten identifiers a member."""
    google, server = api
    phones = tuple(f"+4917012345{i:02d}" for i in range(12))
    contact = Contact(
        "p",
        email="x@example.com",
        phones=phones,
        first_name="X",
        last_name="Y",
        country="DE",
        postal_code="10115",
    )
    dest = GoogleCustomerMatch(settings(server.url))
    [row] = dest.encode([contact])
    assert row is not None and len(row[1].split()) == 8
    assert dest.send(batch([row])).failed == {}
    [held] = google.members()
    assert len(held) == 10


def test_add_then_remove_round_trip(api: tuple[DataManager, ContractServer]) -> None:
    """Rows added are held by the user list; removing the same rows empties it exactly."""
    google, server = api
    dest = GoogleCustomerMatch(settings(server.url))
    contacts = [JANE, Contact("p2", email="b@example.com"), Contact("p3", phones=("+4930123456",))]
    rows = [r for r in dest.encode(contacts) if r]
    assert dest.send(batch(rows)).failed == {}
    assert google.members() == {member(r) for r in rows}
    [ingest] = server.requests_to("POST", "/v1/audienceMembers:ingest")
    destination = ingest.json()["destinations"][0]
    assert destination["operatingAccount"] == {
        "accountType": "GOOGLE_ADS",
        "accountId": "1234567890",
    }
    assert ingest.headers["Authorization"] == f"Bearer {TOKEN}"
    assert dest.send(batch(rows, Op.REMOVE)).failed == {}
    assert google.members() == set() and google.unmatched == []
    assert [a.op for a in google.acknowledged] == ["ingest", "remove"]


def test_a_full_batch_fits_one_request(api: tuple[DataManager, ContractServer]) -> None:
    """batch_size members go in one request; one more is refused by the platform."""
    google, server = api
    dest = GoogleCustomerMatch(settings(server.url))
    rows = [(sha(f"{i}@example.com"), "", "", "", "", "") for i in range(dest.batch_size + 1)]
    assert dest.send(batch(rows[:-1])).failed == {}
    with pytest.raises(Refused, match="TOO_MANY_AUDIENCE_MEMBERS"):
        dest.send(batch(rows))
    assert len(google.members()) == dest.batch_size


def test_malformed_member_fails_alone(api: tuple[DataManager, ContractServer]) -> None:
    """A member the API names as malformed is reported failed; the others are sent again."""
    google, server = api
    good = [(sha("a@example.com"), "", "", "", "", ""), (sha("b@example.com"), "", "", "", "", "")]
    rows = [good[0], ("not-a-hash", "", "", "", "", ""), good[1]]
    outcome = GoogleCustomerMatch(settings(server.url)).send(batch(rows))
    assert list(outcome.failed) == [1] and "INVALID_HEX_ENCODING" in outcome.failed[1]
    assert google.members() == {member(r) for r in good}
    assert len(server.requests_to("POST", ":ingest")) == 2


def test_unknown_user_list_is_refused(api: tuple[DataManager, ContractServer]) -> None:
    """A user list the account does not have refuses the whole request."""
    _, server = api
    with pytest.raises(Refused, match="INVALID_USER_LIST_ID"):
        GoogleCustomerMatch(settings(server.url)).send(batch([JANE_ROW], target="999"))


def test_throttling_is_retried(api: tuple[DataManager, ContractServer]) -> None:
    """RESOURCE_EXHAUSTED (with or without RetryInfo) and 503 are retried, then sent."""
    google, server = api
    server.inject(exhausted("0.01s"), unavailable(), exhausted())
    assert GoogleCustomerMatch(settings(server.url)).send(batch([JANE_ROW])).failed == {}
    assert len(server.requests_to("POST", ":ingest")) == 4
    assert google.members() == {member(JANE_ROW)}


def test_retry_info_delay_is_honoured(api: tuple[DataManager, ContractServer]) -> None:
    """The wait a RESOURCE_EXHAUSTED answer's RetryInfo asks for is waited out."""
    _, server = api
    server.inject(exhausted("0.3s"))
    started = time.monotonic()
    GoogleCustomerMatch(settings(server.url)).send(batch([JANE_ROW]))
    assert time.monotonic() - started >= 0.3  # the backoff alone would be ~0.01 s


def test_endless_throttling_is_unavailable(api: tuple[DataManager, ContractServer]) -> None:
    """Throttled past the last attempt, a send raises Unavailable and changes nothing."""
    google, server = api
    server.inject(*[exhausted()] * 10)
    dest = GoogleCustomerMatch(settings(server.url, retry_attempts="3"))
    with pytest.raises(Unavailable, match="RESOURCE_EXHAUSTED"):
        dest.send(batch([JANE_ROW]))
    assert len(server.requests_to("POST", ":ingest")) == 3
    assert google.members() == set()


def test_bad_token_is_refused_without_the_token(
    api: tuple[DataManager, ContractServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token the API does not take refuses the send; the error never shows the token."""
    _, server = api
    monkeypatch.setenv("GOOGLE_TOKEN", "ya29.expired-secret-value")
    dest = GoogleCustomerMatch(settings(server.url))
    with pytest.raises(Refused) as refused:
        dest.send(batch([JANE_ROW]))
    assert "401" in str(refused.value) and "expired-secret-value" not in str(refused.value)
    assert "expired-secret-value" not in repr(dest)


def test_missing_token_is_a_missing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the token's environment variable the destination cannot be built."""
    monkeypatch.delenv("GOOGLE_TOKEN")
    with pytest.raises(MissingSecret, match="GOOGLE_TOKEN"):
        GoogleCustomerMatch(settings())


def test_test_validates_only(api: tuple[DataManager, ContractServer]) -> None:
    """test() sends a validateOnly upload to each user list: proved, nothing changed."""
    google, server = api
    said = GoogleCustomerMatch(settings(server.url)).test()
    assert USER_LIST in said and "1234567890" in said
    [seen] = server.requests_to("POST", ":ingest")
    assert seen.json()["validateOnly"] is True
    assert google.acknowledged[-1].validate_only and google.members() == set()


def test_check_lists_each_missing_option() -> None:
    """check() names every missing option and segment without a user list; the CSV
    option needs none of them."""
    bare = Settings("g", "google", ("leads", "mqls"), options={"audience.leads": "1"})
    problems = GoogleCustomerMatch.check(bare)
    assert any("token_env" in p for p in problems)
    assert any("operating_account_id" in p for p in problems)
    assert any("audience.mqls" in p for p in problems)
    assert not any("audience.leads" in p for p in problems)
    assert GoogleCustomerMatch.check(settings()) == []
    csv_only = Settings("g", "google", ("leads",), options={"csv_dir": "/tmp/x"})
    assert GoogleCustomerMatch.check(csv_only) == []


def read_csv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def test_csv_files_take_google_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With csv_dir each batch becomes an upload file: Google's headers, hashed email,
    phone and names, plain country and zip; one file per add and per remove batch."""
    monkeypatch.delenv("GOOGLE_TOKEN")  # files need no credentials
    dest = GoogleCustomerMatch(
        Settings("g", "google", ("leads",), options={"csv_dir": str(tmp_path)})
    )
    rows = [r for r in dest.encode([JANE, Contact("p2", email="b@example.com")]) if r]
    dest.send(batch(rows))
    dest.send(batch(rows[1:], Op.REMOVE))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "leads-s1-add-00001.csv",
        "leads-s1-remove-00001.csv",
    ]
    header, jane, other = read_csv(tmp_path / "leads-s1-add-00001.csv")
    assert header == ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"]
    assert jane == [
        sha("jane.doe@example.com"),
        sha("+491701234567"),
        sha("jane"),
        sha("doe-smith"),
        "DE",
        "10115",
    ]
    assert other == [sha("b@example.com"), "", "", "", "", ""]
    assert read_csv(tmp_path / "leads-s1-remove-00001.csv")[1] == other
    assert "takes files" in dest.test()


def test_csv_file_is_whole_or_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails leaves no file (and no temporary one): a reader never sees half."""
    dest = GoogleCustomerMatch(
        Settings("g", "google", ("leads",), options={"csv_dir": str(tmp_path)})
    )

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(Unavailable, match="No space left"):
        dest.send(batch([JANE_ROW]))
    assert list(tmp_path.iterdir()) == []
