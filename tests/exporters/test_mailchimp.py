"""The Mailchimp destination against a strict Mailchimp over a real socket."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import pytest
import requests

from dmp.membership.audience import Contact
from exporters.destination import Batch, Op, Refused, Row, Settings, Unavailable
from exporters.mailchimp import MailchimpAudience, subscriber_hash
from tests.exporters.contracts.mailchimp import MailchimpServer, outage, throttled

KEY = "0123abcd-us21"
LIST = "a1b2c3d4e5"
SEGMENT = "webinar-leads"
ENV = "DMP_TEST_MAILCHIMP_KEY"


@pytest.fixture
def mailchimp(monkeypatch: pytest.MonkeyPatch) -> Iterator[MailchimpServer]:
    """Return a running Mailchimp whose key is in the environment."""
    monkeypatch.setenv(ENV, KEY)
    with MailchimpServer(KEY, LIST) as server:
        yield server


def audience(server: MailchimpServer, **options: str) -> MailchimpAudience:
    """Return the destination on the server, with fast retries and the given options."""
    defaults = {
        "list_id": LIST,
        "api_key_env": ENV,
        "base_url": f"{server.url}/3.0",
        "retry_base": "0.01",
    }
    settings = Settings("newsletter", "mailchimp", (SEGMENT,), options=defaults | options)
    return MailchimpAudience(settings)


def contact(email: str, first: str = "Anna", *, doi: bool = True, **more: str) -> Contact:
    """Return an audience member with an email."""
    return Contact(f"p-{email}", email=email, first_name=first, double_opt_in=doi, **more)


def batch(rows: Sequence[Row | None], op: Op = Op.ADD, segment: str = SEGMENT) -> Batch:
    """Return a batch of the given rows."""
    kept = [row for row in rows if row is not None]
    return Batch(op, segment, "", kept, 1, True, "sync-1", len(kept))


def test_new_members_are_subscribed_with_double_opt_in_else_pending(
    mailchimp: MailchimpServer,
) -> None:
    """A confirmed double opt-in is subscribed; anyone else pending (Mailchimp confirms)."""
    dest = audience(mailchimp)
    rows = dest.encode([contact("anna@firma.de"), contact("ben@firma.de", "Ben", doi=False)])
    outcome = dest.send(batch(rows))
    assert (outcome.failed, outcome.unsubscribed) == ({}, [])
    anna, ben = mailchimp.member("anna@firma.de"), mailchimp.member("ben@firma.de")
    assert anna is not None and ben is not None
    assert (anna.status, ben.status) == ("subscribed", "pending")
    assert anna.merge_fields == {"FNAME": "Anna"} and ben.merge_fields == {"FNAME": "Ben"}
    assert mailchimp.holders(SEGMENT) == {"anna@firma.de", "ben@firma.de"}
    tagged = [a for a in mailchimp.acknowledged() if a.op == "add"]
    assert [(a.tag, set(a.emails)) for a in tagged] == [
        (SEGMENT, {"anna@firma.de", "ben@firma.de"})
    ]


def test_rows_are_keyed_by_email_and_need_one(mailchimp: MailchimpServer) -> None:
    """A row is (email, status_if_new, names …); a contact without an email has none."""
    dest = audience(mailchimp)
    person = contact("anna@firma.de", last_name="Berg", company="Firma GmbH")
    rows = dest.encode([person, Contact("p-2", uids=("cookie-1",))])
    assert rows == [("anna@firma.de", "subscribed", "Anna", "Berg", "Firma GmbH", ""), None]
    assert len(rows[0] or ()) == len(MailchimpAudience.columns)
    assert MailchimpAudience.columns[MailchimpAudience.key] == "email"


def test_unsubscribed_and_cleaned_members_are_never_resubscribed(
    mailchimp: MailchimpServer,
) -> None:
    """Who unsubscribed or bounced in Mailchimp keeps that status, comes back as
    unsubscribed and gets no active tag; the others are tagged."""
    mailchimp.put_member("left@firma.de", "unsubscribed")
    mailchimp.put_member("bounced@firma.de", "cleaned")
    mailchimp.put_member("review@firma.de", "subscribed", in_review=True)
    dest = audience(mailchimp)
    emails = ["left@firma.de", "bounced@firma.de", "review@firma.de", "new@firma.de"]
    outcome = dest.send(batch(dest.encode([contact(e) for e in emails])))
    assert outcome.unsubscribed == [0, 1, 2] and outcome.failed == {}
    statuses = [mailchimp.member(e).status for e in emails]  # type: ignore[union-attr]
    assert statuses == ["unsubscribed", "cleaned", "subscribed", "subscribed"]
    assert mailchimp.holders(SEGMENT) == {"new@firma.de"}
    puts = mailchimp.requests_to("PUT", subscriber_hash("left@firma.de"))
    assert puts and all("status" not in seen.json() for seen in puts)


def test_a_member_deleted_for_good_there_counts_as_unsubscribed(
    mailchimp: MailchimpServer,
) -> None:
    """Someone Mailchimp deleted permanently ("Forgotten Email Not Subscribed": only
    their own sign-up brings them back) comes back as unsubscribed, not as a failure
    retried at every sync."""
    mailchimp.forget_member("gone@firma.de")
    dest = audience(mailchimp)
    outcome = dest.send(batch(dest.encode([contact("gone@firma.de"), contact("new@firma.de")])))
    assert (outcome.unsubscribed, outcome.failed) == ([0], {})
    assert mailchimp.member("gone@firma.de") is None
    assert mailchimp.holders(SEGMENT) == {"new@firma.de"}


def test_remove_makes_the_tag_inactive_and_keeps_the_member(mailchimp: MailchimpServer) -> None:
    """Leaving a segment removes its tag; the member stays subscribed in the audience."""
    dest = audience(mailchimp)
    rows = dest.encode([contact("anna@firma.de"), contact("ben@firma.de", "Ben")])
    dest.send(batch(rows))
    outcome = dest.send(batch(rows[:1], Op.REMOVE))
    assert (outcome.failed, outcome.unsubscribed) == ({}, [])
    anna = mailchimp.member("anna@firma.de")
    assert anna is not None and anna.status == "subscribed" and SEGMENT not in anna.tags
    assert mailchimp.holders(SEGMENT) == {"ben@firma.de"}
    assert mailchimp.acknowledged()[-1].op == "remove"
    assert dest.send(batch(rows[:1], Op.REMOVE)).failed == {}  # sent again: still fine


def test_remove_from_a_tag_that_does_not_exist_creates_nothing(
    mailchimp: MailchimpServer,
) -> None:
    """Untagging members of a tag Mailchimp never had is done without making the tag."""
    dest = audience(mailchimp)
    outcome = dest.send(batch(dest.encode([contact("anna@firma.de")]), Op.REMOVE))
    assert outcome.failed == {} and mailchimp.requests_to("POST", "/segments") == []


def test_a_changed_name_is_an_upsert(mailchimp: MailchimpServer) -> None:
    """A new name updates the member's merge field; status and tag stay."""
    dest = audience(mailchimp)
    dest.send(batch(dest.encode([contact("anna@firma.de", "Anna")])))
    dest.send(batch(dest.encode([contact("anna@firma.de", "Anne", doi=False)])))
    anna = mailchimp.member("anna@firma.de")
    assert anna is not None and anna.merge_fields == {"FNAME": "Anne"}
    assert anna.status == "subscribed" and SEGMENT in anna.tags


def test_tag_option_names_the_tag_and_an_existing_tag_is_reused(
    mailchimp: MailchimpServer,
) -> None:
    """``tag.<segment>`` names the tag; one a marketer made already is used, not doubled."""
    made = mailchimp.create_tag("Webinar Leads")
    dest = audience(mailchimp, **{f"tag.{SEGMENT}": "Webinar Leads"})
    dest.send(batch(dest.encode([contact("anna@firma.de")])))
    assert mailchimp.holders("Webinar Leads") == {"anna@firma.de"}
    assert mailchimp.requests_to("POST", "/segments") == []
    assert mailchimp.requests_to("POST", f"/segments/{made}")


def test_a_tag_deleted_in_mailchimp_is_made_again(mailchimp: MailchimpServer) -> None:
    """If the tag was deleted there since it was looked up, it is created again."""
    dest = audience(mailchimp)
    dest.send(batch(dest.encode([contact("anna@firma.de")])))
    mailchimp.delete_tag(SEGMENT)
    assert dest.send(batch(dest.encode([contact("ben@firma.de")]))).failed == {}
    assert mailchimp.holders(SEGMENT) == {"ben@firma.de"}


def test_a_refused_member_fails_alone(mailchimp: MailchimpServer) -> None:
    """A member Mailchimp refuses is failed with its words; the others go through."""
    dest = audience(mailchimp)
    rows = dest.encode([contact("anna@firma.de"), contact("fake@example.com")])
    outcome = dest.send(batch(rows))
    assert list(outcome.failed) == [1] and outcome.failed[1].startswith("Invalid Resource:")
    assert "looks fake or invalid" in outcome.failed[1]
    assert mailchimp.holders(SEGMENT) == {"anna@firma.de"}


def test_merge_fields_follow_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """``merge.<column>`` fills that merge tag; a tag the audience lacks fails the member;
    a required field is skipped unless ``skip_merge_validation=false``."""
    monkeypatch.setenv(ENV, KEY)
    with MailchimpServer(
        KEY, LIST, merge_fields=("FNAME", "LNAME", "FIRMA"), required=("FNAME",)
    ) as mc:
        person = contact("anna@firma.de", company="Firma GmbH")
        dest = audience(mc, **{"merge.company": "FIRMA"})
        assert dest.send(batch(dest.encode([person]))).failed == {}
        assert mc.member("anna@firma.de").merge_fields == {"FNAME": "Anna", "FIRMA": "Firma GmbH"}  # type: ignore[union-attr]
        wrong = audience(mc, **{"merge.job_title": "JOB"})
        failed = wrong.send(batch(wrong.encode([contact("ben@firma.de", job_title="CTO")]))).failed
        assert failed[0] == "Invalid Resource: Your merge fields were invalid."
        strict = audience(mc, skip_merge_validation="false")
        failed = strict.send(batch(strict.encode([contact("cem@firma.de", "")]))).failed
        assert failed[0] == "Invalid Resource: Your merge fields were invalid."
        nameless = audience(mc).send(batch(audience(mc).encode([contact("dana@firma.de", "")])))
        assert nameless.failed == {} and mc.member("dana@firma.de") is not None


def test_throttling_and_outages_are_retried(mailchimp: MailchimpServer) -> None:
    """429 (with Retry-After) and 5xx answers are retried until Mailchimp takes the batch."""
    dest = audience(mailchimp, connections="3")
    mailchimp.inject(throttled("0"), outage(500), throttled(None), outage(503))
    outcome = dest.send(batch(dest.encode([contact("anna@firma.de"), contact("ben@firma.de")])))
    assert (outcome.failed, outcome.unsubscribed) == ({}, [])
    assert mailchimp.holders(SEGMENT) == {"anna@firma.de", "ben@firma.de"}
    assert dest.http.retried == 4  # where the engine counts them, all clients' together


def test_a_lasting_outage_is_unavailable(mailchimp: MailchimpServer) -> None:
    """Past the last attempt the batch raises Unavailable (the engine tries again later)."""
    dest = audience(mailchimp, retry_attempts="2", connections="1")
    mailchimp.inject(outage(503), outage(503))
    with pytest.raises(Unavailable):
        dest.send(batch(dest.encode([contact("anna@firma.de")])))


def test_a_bad_key_is_refused_without_showing_it(
    mailchimp: MailchimpServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong API key raises Refused; the key is in no message and no log line."""
    wrong = "ffffeeee9999-us21"
    monkeypatch.setenv(ENV, wrong)
    dest = audience(mailchimp)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Refused) as test_error:
        dest.test()
    with pytest.raises(Refused) as send_error:
        dest.send(batch(dest.encode([contact("anna@firma.de")])))
    for text in (str(test_error.value), str(send_error.value), caplog.text, repr(dest)):
        assert wrong not in text and "ffffeeee9999" not in text
    assert "401" in str(test_error.value) and mailchimp.member("anna@firma.de") is None


def test_no_more_than_ten_requests_are_ever_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even asked for more, upserts run at most 10 at a time (Mailchimp's limit)."""
    monkeypatch.setenv(ENV, KEY)
    with MailchimpServer(KEY, LIST, delay=0.03) as mc:
        dest = audience(mc, connections="50")
        contacts = [contact(f"p{i}@firma.de") for i in range(60)]
        outcome = dest.send(batch(dest.encode(contacts)))
        assert outcome.failed == {} and len(mc.holders(SEGMENT)) == 60
        assert 2 <= mc.peak <= 10 and mc.rejected == 0


def test_the_server_refuses_an_eleventh_open_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract server answers 429 past 10 simultaneous connections (as Mailchimp)."""
    with MailchimpServer(KEY, LIST, delay=0.3) as mc:
        email = "anna@firma.de"
        url = f"{mc.url}/3.0/lists/{LIST}/members/{subscriber_hash(email)}"
        body = {"email_address": email, "status_if_new": "subscribed"}
        codes: list[int] = []

        def put() -> None:
            codes.append(requests.put(url, json=body, auth=("x", KEY), timeout=10).status_code)

        threads = [threading.Thread(target=put) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert codes.count(429) >= 2 and mc.rejected >= 2


def test_the_server_tags_one_member_at_a_time(mailchimp: MailchimpServer) -> None:
    """The contract server's member tags endpoint: active adds, inactive removes (204);
    an unknown member is 404 problem+json."""
    mailchimp.put_member("anna@firma.de", "subscribed")
    url = f"{mailchimp.url}/3.0/lists/{LIST}/members/{{}}/tags"
    for status in ("active", "inactive"):
        body = {"tags": [{"name": "vip", "status": status}]}
        answer = requests.post(
            url.format(subscriber_hash("anna@firma.de")), json=body, auth=("x", KEY)
        )
        assert answer.status_code == 204
        assert mailchimp.holders("vip") == ({"anna@firma.de"} if status == "active" else set())
    missing = requests.post(
        url.format(subscriber_hash("nobody@firma.de")), json=body, auth=("x", KEY)
    )
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/problem+json")


def test_check_lists_what_is_missing_or_wrong() -> None:
    """``check`` names a missing list_id and key variable, bad connections and merge tags."""
    settings = Settings(
        "newsletter",
        "mailchimp",
        (SEGMENT,),
        options={"connections": "20", "merge.company": "Firma Name", f"tag.{SEGMENT}": "x" * 101},
    )
    problems = MailchimpAudience.check(settings)
    assert len(problems) == 5
    for word in ("list_id", "api_key_env", "connections", "merge.company", "100 characters"):
        assert any(word in line for line in problems), word
    fine = Settings("n", "mailchimp", (SEGMENT,), options={"list_id": LIST, "api_key_env": ENV})
    assert MailchimpAudience.check(fine) == []


def test_test_proves_the_key_and_the_audience(mailchimp: MailchimpServer) -> None:
    """``test`` pings with the key and reads the audience; an unknown audience is Refused."""
    mailchimp.put_member("anna@firma.de", "subscribed")
    said = audience(mailchimp).test()
    assert "Everything's Chimpy!" in said and LIST in said and "has 1 subscribed" in said
    assert mailchimp.requests_to("GET", "/ping") and mailchimp.requests_to("GET", f"/lists/{LIST}")
    with pytest.raises(Refused, match="no audience"):
        audience(mailchimp, list_id="0000000000").test()


def test_the_data_centre_comes_from_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a base_url the API is the key's data centre; a key without one is Refused."""
    monkeypatch.setenv(ENV, KEY)
    settings = Settings("n", "mailchimp", (SEGMENT,), options={"list_id": LIST, "api_key_env": ENV})
    assert MailchimpAudience(settings).http.base_url == "https://us21.api.mailchimp.com/3.0"
    monkeypatch.setenv(ENV, "0123abcd")
    with pytest.raises(Refused, match="data centre") as error:
        MailchimpAudience(settings)
    assert "0123abcd" not in str(error.value)
