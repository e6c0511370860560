"""The CleverReach destination against a server speaking CleverReach's REST API v3."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from dmp.membership.audience import Contact
from exporters.cleverreach import CleverReachGroup
from exporters.destination import Batch, Op, Refused, Row, Settings, Unavailable
from tests.exporters.contracts.cleverreach import CleverReach, outage, throttled

TOKEN = "cr-oauth-access-token-SECRET-0123456789"
GROUP = 1158984


@pytest.fixture
def cleverreach(monkeypatch: pytest.MonkeyPatch) -> Iterator[CleverReach]:
    """Return a CleverReach account served on a real socket, its token in CR_TOKEN."""
    monkeypatch.setenv("CR_TOKEN", TOKEN)
    platform = CleverReach(TOKEN, {GROUP: "Webinar leads", 42: "Other"})
    with platform.server:
        yield platform


def settings(cleverreach: CleverReach, **options: str) -> Settings:
    """Return the settings of a CleverReach destination for the segment "webinar"."""
    base = {
        "token_env": "CR_TOKEN",
        "group.webinar": str(GROUP),
        "base_url": cleverreach.server.url + "/v3",
        "retry_base": "0.01",
    }
    return Settings("cr-main", "cleverreach", ("webinar",), options=base | options)


def batch(op: Op, rows: list[Row]) -> Batch:
    """Return the first and last batch of a sync."""
    return Batch(op, "webinar", str(GROUP), rows, 1, True, "s1", len(rows))


def row(email: str, doi: bool = True) -> Row:
    """Return the row of a person at Example GmbH in Germany."""
    return (email, "Ada", "Lovelace", "Example GmbH", "DE", "1" if doi else "0")


def test_add_upserts_receivers_with_their_attributes(cleverreach: CleverReach) -> None:
    """An add upserts the batch in one upsertplus call, with source, global attributes
    and the segment's tag; a confirmed double opt-in is active at once."""
    destination = CleverReachGroup(settings(cleverreach))
    outcome = destination.send(batch(Op.ADD, [row("a@example.com"), row("b@x.de")]))
    assert (outcome.failed, outcome.unsubscribed) == ({}, [])
    assert cleverreach.active(GROUP) == {"a@example.com", "b@x.de"}
    held = cleverreach.receiver(GROUP, "a@example.com")
    assert held is not None and held["source"] == "dmp" and held["tags"] == ["dmp.webinar"]
    assert held["global_attributes"] == {
        "firstname": "Ada",
        "lastname": "Lovelace",
        "company": "Example GmbH",
        "country": "DE",
    }
    [upsert] = cleverreach.server.requests_to("POST", "/receivers/upsertplus")
    assert all("deactivated" not in receiver for receiver in upsert.json())


def test_encode_carries_the_double_opt_in(cleverreach: CleverReach) -> None:
    """A row holds the email, names, company, country and the double opt-in flag; a
    contact without email has none."""
    contacts = [Contact("p1"), Contact("p2", email="c@x.de", last_name="K", double_opt_in=True)]
    rows = CleverReachGroup(settings(cleverreach)).encode(contacts)
    assert rows == [None, ("c@x.de", "", "K", "", "", "1")]


def test_unconfirmed_receiver_waits_for_double_opt_in(cleverreach: CleverReach) -> None:
    """Without a confirmed double opt-in a new receiver is sent activated 0 (inactive
    until confirmed); once dmp holds the confirmation the next add activates it."""
    destination = CleverReachGroup(settings(cleverreach))
    assert destination.send(batch(Op.ADD, [row("new@x.de", doi=False)])).failed == {}
    held = cleverreach.receiver(GROUP, "new@x.de")
    assert held is not None and held["activated"] == 0 and held["registered"] > 0
    assert cleverreach.active(GROUP) == set()
    destination.send(batch(Op.ADD, [row("new@x.de", doi=True)]))
    assert cleverreach.active(GROUP) == {"new@x.de"}


def test_active_receiver_keeps_its_state(cleverreach: CleverReach) -> None:
    """An active receiver (signed up by form) is updated without any activation field,
    so an unconfirmed row in dmp never deactivates it."""
    cleverreach.add_receiver(GROUP, "form@x.de", active=True)
    destination = CleverReachGroup(settings(cleverreach))
    assert destination.send(batch(Op.ADD, [row("form@x.de", doi=False)])).failed == {}
    [upsert] = cleverreach.server.requests_to("POST", "/receivers/upsertplus")
    assert set(upsert.json()[0]) == {"email", "source", "global_attributes", "tags"}
    assert cleverreach.active(GROUP) == {"form@x.de"}


def test_deactivated_receiver_is_never_reactivated_and_is_reported(
    cleverreach: CleverReach,
) -> None:
    """A receiver CleverReach holds as deactivated is reported unsubscribed and left
    out of the upsert; on a remove it is kept, so its unsubscribe stays on record."""
    destination = CleverReachGroup(settings(cleverreach))
    destination.send(batch(Op.ADD, [row("a@x.de"), row("b@x.de")]))
    cleverreach.unsubscribe(GROUP, "b@x.de")
    outcome = destination.send(batch(Op.ADD, [row("a@x.de"), row("b@x.de", doi=True)]))
    assert outcome.unsubscribed == [1] and outcome.failed == {}
    assert cleverreach.reactivated == [] and cleverreach.active(GROUP) == {"a@x.de"}
    removed = destination.send(batch(Op.REMOVE, [row("a@x.de"), row("b@x.de")]))
    assert (removed.failed, removed.unsubscribed) == ({}, [])
    assert cleverreach.receiver(GROUP, "a@x.de") is None
    held = cleverreach.receiver(GROUP, "b@x.de")
    assert held is not None and held["deactivated"] > 0
    assert cleverreach.unsubscribes_lost == []


def test_remove_of_an_absent_receiver_is_done(cleverreach: CleverReach) -> None:
    """Removing a receiver the group no longer holds is acknowledged, nothing deleted."""
    outcome = CleverReachGroup(settings(cleverreach)).send(batch(Op.REMOVE, [row("x@x.de")]))
    assert (outcome.failed, outcome.unsubscribed) == ({}, [])
    assert cleverreach.server.requests_to("DELETE", "/receivers/x@x.de") == []


def test_refused_address_is_a_failed_row(cleverreach: CleverReach) -> None:
    """A receiver missing from upsertplus's answer (an address CleverReach refused) is a
    failed row; the others are upserted."""
    rows = [row("not-an-address"), row("a@x.de")]
    outcome = CleverReachGroup(settings(cleverreach)).send(batch(Op.ADD, rows))
    assert list(outcome.failed) == [0] and outcome.unsubscribed == []
    assert cleverreach.active(GROUP) == {"a@x.de"}


def test_throttling_and_server_errors_are_retried(cleverreach: CleverReach) -> None:
    """429 and 5xx answers are retried until CleverReach answers; past the last attempt
    the platform is unavailable."""
    cleverreach.server.inject(throttled(), outage(), outage(502))
    destination = CleverReachGroup(settings(cleverreach))
    assert destination.send(batch(Op.ADD, [row("a@x.de")])).failed == {}
    assert cleverreach.active(GROUP) == {"a@x.de"}
    cleverreach.server.inject(*(outage() for _ in range(3)))
    with pytest.raises(Unavailable):
        CleverReachGroup(settings(cleverreach, retry_attempts="3")).send(
            batch(Op.REMOVE, [row("a@x.de")])
        )


def test_bad_token_is_refused_without_showing_it(
    cleverreach: CleverReach, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A token CleverReach does not accept is refused at once; neither the error nor
    the logs show it."""
    wrong = "cr-wrong-token-DO-NOT-LOG"
    monkeypatch.setenv("CR_TOKEN", wrong)
    caplog.set_level(logging.DEBUG)
    destination = CleverReachGroup(settings(cleverreach))
    with pytest.raises(Refused) as refused:
        destination.send(batch(Op.ADD, [row("a@x.de")]))
    assert "401" in str(refused.value)
    with pytest.raises(Refused):
        destination.test()
    for text in (str(refused.value), repr(destination), caplog.text):
        assert wrong not in text and TOKEN not in text


@pytest.mark.parametrize("op", [Op.ADD, Op.REMOVE])
def test_unknown_group_is_refused(cleverreach: CleverReach, op: Op) -> None:
    """A group the account does not have refuses the whole batch, a remove included."""
    with pytest.raises(Refused, match="invalid group"):
        CleverReachGroup(settings(cleverreach)).send(
            Batch(op, "webinar", "999", [row("a@x.de")], 1, True, "s1", 1)
        )


def test_replace_is_refused(cleverreach: CleverReach) -> None:
    """CleverReach groups take adds and removes: a replace is refused, nothing sent."""
    with pytest.raises(Refused):
        CleverReachGroup(settings(cleverreach)).send(batch(Op.REPLACE, [row("a@x.de")]))
    assert cleverreach.server.seen == []


def test_check_lists_missing_and_wrong_options() -> None:
    """check() names a missing token variable and each segment without a numeric group."""
    bad = Settings("c", "cleverreach", ("webinar", "ebook"), options={"group.ebook": "abc"})
    problems = CleverReachGroup.check(bad)
    assert len(problems) == 3
    for named in ("token_env", "group.webinar", "group.ebook"):
        assert any(named in p for p in problems)
    options = {"token_env": "T", "group.webinar": "5"}
    good = Settings("c", "cleverreach", ("webinar",), options=options)
    assert CleverReachGroup.check(good) == []


def test_test_reads_the_account_and_each_group(cleverreach: CleverReach) -> None:
    """test() names the account and the configured groups."""
    said = CleverReachGroup(settings(cleverreach)).test()
    assert "Beispiel GmbH" in said and "Webinar leads" in said
