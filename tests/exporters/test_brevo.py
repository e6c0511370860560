"""The Brevo destination against a server speaking Brevo's contacts API over a socket."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from dmp.membership.audience import Contact
from exporters.brevo import BrevoList
from exporters.destination import Batch, Op, Refused, Row, Settings, Unavailable
from tests.exporters.contracts.brevo import Brevo, outage, throttled

KEY = "xkeysib-0123456789abcdef-SECRET"
LIST = 7


@pytest.fixture
def brevo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Brevo]:
    """Return a Brevo account served on a real socket, its key in BREVO_KEY."""
    monkeypatch.setenv("BREVO_KEY", KEY)
    platform = Brevo(KEY, {LIST: "Webinar leads", 8: "Whitepaper"})
    with platform.server:
        yield platform


def settings(brevo: Brevo, **options: str) -> Settings:
    """Return the settings of a Brevo destination for the segment "webinar"."""
    base = {
        "api_key_env": "BREVO_KEY",
        "list.webinar": str(LIST),
        "base_url": brevo.server.url + "/v3",
        "retry_base": "0.01",
        "per_minute": "0",
    }
    return Settings("brevo-main", "brevo", ("webinar",), options=base | options)


def batch(op: Op, rows: list[Row]) -> Batch:
    """Return the first and last batch of a sync."""
    return Batch(op, "webinar", str(LIST), rows, 1, True, "s1", len(rows))


def rows_of(*emails: str) -> list[Row]:
    """Return the rows of people with these emails, all named Ada Lovelace."""
    return [(email, "Ada", "Lovelace") for email in emails]


def test_add_upserts_contacts_then_joins_them_to_the_list(brevo: Brevo) -> None:
    """An add creates each contact with UPPERCASE attributes and updateEnabled, never a
    blacklist flag, then adds the batch to the list in one call."""
    outcome = BrevoList(settings(brevo)).send(batch(Op.ADD, rows_of("a@example.com", "b@x.de")))
    assert (outcome.failed, outcome.unsubscribed) == ({}, [])
    assert brevo.members(LIST) == {"a@example.com", "b@x.de"}
    assert brevo.attributes("a@example.com") == {"FIRSTNAME": "Ada", "LASTNAME": "Lovelace"}
    upserts = [s.json() for s in brevo.server.requests_to("POST", "/v3/contacts")]
    assert all(u["updateEnabled"] is True and "emailBlacklisted" not in u for u in upserts)
    [joined] = brevo.server.requests_to("POST", f"/lists/{LIST}/contacts/add")
    assert joined.json() == {"emails": ["a@example.com", "b@x.de"]}


def test_encode_needs_an_email(brevo: Brevo) -> None:
    """A row is email, first and last name; a contact without a usable email has none."""
    contacts = [Contact("p1"), Contact("p2", email="c@x.de", first_name="Ada", company="X")]
    assert BrevoList(settings(brevo)).encode(contacts) == [None, ("c@x.de", "Ada", "")]


def test_sending_again_changes_nothing(brevo: Brevo) -> None:
    """A batch sent again (a crash before its checkpoint) neither upserts unchanged
    contacts nor adds members twice."""
    destination = BrevoList(settings(brevo))
    destination.send(batch(Op.ADD, rows_of("a@example.com")))
    before = len(brevo.server.seen)
    assert destination.send(batch(Op.ADD, rows_of("a@example.com"))).failed == {}
    assert [s.method for s in brevo.server.seen[before:]] == ["GET"]
    assert brevo.members(LIST) == {"a@example.com"}


def test_remove_takes_members_out_of_the_list_and_keeps_the_contact(brevo: Brevo) -> None:
    """A remove leaves the list; the contact (and any unsubscribe) stays in Brevo, and an
    address no longer in the list counts as removed."""
    destination = BrevoList(settings(brevo))
    destination.send(batch(Op.ADD, rows_of("a@example.com", "b@x.de")))
    outcome = destination.send(batch(Op.REMOVE, rows_of("a@example.com", "gone@x.de")))
    assert (outcome.failed, outcome.unsubscribed) == ({}, [])
    assert brevo.members(LIST) == {"b@x.de"}
    assert "a@example.com" in brevo.contacts
    again = destination.send(batch(Op.REMOVE, rows_of("a@example.com")))
    assert again.failed == {}


def test_blacklisted_contact_is_never_resubscribed_and_is_reported(brevo: Brevo) -> None:
    """A contact Brevo holds as blacklisted is reported unsubscribed, not upserted and
    not added to the list; nothing ever un-blacklists anyone."""
    brevo.add_contact("out@example.com", blacklisted=True, lists=(8,))
    destination = BrevoList(settings(brevo))
    outcome = destination.send(batch(Op.ADD, rows_of("in@example.com", "out@example.com")))
    assert outcome.unsubscribed == [1] and outcome.failed == {}
    assert brevo.members(LIST) == {"in@example.com"}
    brevo.unsubscribe("in@example.com")  # later, the person clicks unsubscribe
    changed = [("in@example.com", "Ada", "King")]
    assert destination.send(batch(Op.ADD, changed)).unsubscribed == [0]
    assert brevo.resubscribed == [] and brevo.contacts["in@example.com"].blacklisted
    bodies = [s.body for s in brevo.server.seen]
    assert not any(b"emailBlacklisted" in body for body in bodies)


def test_refused_email_is_a_failed_row_and_the_rest_go_through(brevo: Brevo) -> None:
    """An address Brevo refuses is a failed row with Brevo's reason; the others join."""
    rows = [("not-an-email", "", ""), *rows_of("a@example.com")]
    outcome = BrevoList(settings(brevo)).send(batch(Op.ADD, rows))
    assert list(outcome.failed) == [0]
    assert "invalid_parameter" in outcome.failed[0]
    assert brevo.members(LIST) == {"a@example.com"}


def test_throttled_request_waits_for_the_rate_limit_reset(brevo: Brevo) -> None:
    """A 429 is retried after the seconds x-sib-ratelimit-reset names (not the backoff)."""
    brevo.server.inject(throttled(reset=1))
    started = time.monotonic()
    outcome = BrevoList(settings(brevo)).send(batch(Op.ADD, rows_of("a@example.com")))
    assert time.monotonic() - started >= 1.0
    assert outcome.failed == {} and brevo.members(LIST) == {"a@example.com"}
    assert len(brevo.server.requests_to("GET", "/v3/contacts/a@example.com")) == 2


def test_server_errors_are_retried(brevo: Brevo) -> None:
    """500s are retried until Brevo answers; past the last attempt the platform is
    unavailable (the sync resumes later)."""
    brevo.server.inject(outage(), outage(503))
    assert BrevoList(settings(brevo)).send(batch(Op.ADD, rows_of("a@x.de"))).failed == {}
    assert brevo.members(LIST) == {"a@x.de"}
    brevo.server.inject(outage(), outage(), outage())
    with pytest.raises(Unavailable):
        BrevoList(settings(brevo, retry_attempts="3")).send(batch(Op.REMOVE, rows_of("a@x.de")))


def test_bad_key_is_refused_without_showing_it(
    brevo: Brevo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A key Brevo does not know is refused at once; neither the error nor the logs
    show the key."""
    wrong = "xkeysib-wrong-key-DO-NOT-LOG"
    monkeypatch.setenv("BREVO_KEY", wrong)
    caplog.set_level(logging.DEBUG)
    destination = BrevoList(settings(brevo))
    with pytest.raises(Refused) as refused:
        destination.send(batch(Op.ADD, rows_of("a@example.com")))
    assert "401" in str(refused.value)
    with pytest.raises(Refused):
        destination.test()
    for text in (str(refused.value), repr(destination), caplog.text):
        assert wrong not in text and KEY not in text
    assert len(brevo.server.seen) == 2  # no retry of a refused key


def test_check_lists_missing_and_wrong_options() -> None:
    """check() names a missing key variable and each segment without a numeric list."""
    empty = Settings("b", "brevo", ("webinar", "ebook", "demo"), options={"list.ebook": "x7"})
    problems = BrevoList.check(empty)
    assert len(problems) == 4
    for named in ("api_key_env", "list.webinar", "list.ebook", "list.demo"):
        assert any(named in p for p in problems)
    good = Settings("b", "brevo", ("webinar",), options={"api_key_env": "K", "list.webinar": "7"})
    assert BrevoList.check(good) == []


def test_test_reads_the_account_and_each_list(brevo: Brevo) -> None:
    """test() names the account and the configured lists; an unknown list is refused."""
    said = BrevoList(settings(brevo)).test()
    assert "Example GmbH" in said and "Webinar leads" in said
    with pytest.raises(Refused, match="List ID does not exist"):
        BrevoList(settings(brevo, **{"list.webinar": "99"})).test()


def test_replace_is_refused(brevo: Brevo) -> None:
    """Brevo lists take adds and removes: a replace batch is refused, nothing sent."""
    with pytest.raises(Refused):
        BrevoList(settings(brevo)).send(batch(Op.REPLACE, rows_of("a@x.de")))
    assert brevo.server.seen == []
