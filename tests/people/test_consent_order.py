"""Consent changes apply in event-time order: a hit older than the state held changes
nothing (and logs nothing), whichever order the worker handles hits in."""

from __future__ import annotations

import json

from dmp.cli import cli
from dmp.ingest.batch import withdraw_cookie
from dmp.people import consents
from dmp.people.identity import IdKind
from dmp.storage import keyspace
from tests.factories import NOW, consent_of, make_hit, make_identify, person_of, send_hits

MINUTE = 60_000
GIVEN = {"analytics": True, "ads": True}
REFUSED = {"analytics": True, "ads": False}


def _proofs(redis, pid: str) -> list[dict]:
    """Return a person's consent proofs, oldest first."""
    return [json.loads(p) for p in redis.lrange(keyspace.person(pid, "consentlog"), 0, -1)]


def test_an_older_browser_consent_handled_later_is_not_applied(redis, drain):
    """A browser's ads refusal from a minute before the grant stored, handled after it
    (another batch, the state read back from Redis), neither changes nor logs anything."""
    send_hits(redis, make_hit(uid="c1", timestamp=NOW, consent=GIVEN))
    drain()
    send_hits(redis, make_hit(uid="c1", timestamp=NOW - MINUTE, consent=REFUSED))
    drain()
    person = person_of(redis, IdKind.UID, "c1")
    ads = consent_of(person, "ads")
    assert ads["granted"] is True and ads["at"] == consents.iso(NOW)
    state = redis.hget(keyspace.person(person["person_id"]), "c|ads|uid:c1")
    assert state == f"1:{NOW}"
    assert [p["consent"] for p in _proofs(redis, person["person_id"])] == [GIVEN]


def test_the_order_holds_within_one_batch_and_a_newer_change_still_applies(redis, drain):
    """In one batch: the grant at NOW, a refusal from before it (not applied), then a
    refusal after it (applied): the state is the newest, with two proofs."""
    send_hits(
        redis,
        make_hit(uid="c1", timestamp=NOW, consent=GIVEN),
        make_hit(uid="c1", timestamp=NOW - MINUTE, consent=REFUSED),
        make_hit(uid="c1", timestamp=NOW + MINUTE, consent=REFUSED),
    )
    drain()
    person = person_of(redis, IdKind.UID, "c1")
    assert consent_of(person, "ads")["granted"] is False
    assert redis.hget(keyspace.person(person["person_id"]), "c|ads|uid:c1") == f"0:{NOW + MINUTE}"
    assert [p["at"] for p in _proofs(redis, person["person_id"])] == [NOW, NOW + MINUTE]


def test_a_browser_saying_again_what_it_said_before_a_change_is_heard(redis, drain):
    """The browser's ads grant, its sign-up refusing ads (a change the skip of repeated
    consent must notice), then a page granting ads again: granted, three proofs."""
    signup = make_hit(
        source="tag",
        type="identify",
        event="identify",
        uid="c1",
        traits={"email": "cleo@acme.de"},
        timestamp=NOW + MINUTE,
        consent=REFUSED,
    )
    send_hits(
        redis,
        make_hit(uid="c1", timestamp=NOW, consent=GIVEN),
        signup,
        make_hit(uid="c1", timestamp=NOW + 2 * MINUTE, consent=GIVEN),
    )
    drain()
    person = person_of(redis, IdKind.UID, "c1")
    assert consent_of(person, "ads", "uid:c1")["granted"] is True
    ads = [
        p["consent"]["ads"] for p in _proofs(redis, person["person_id"]) if "ads" in p["consent"]
    ]
    assert ads == [True, False, False, True]  # the cookie's three, the email's refusal


def test_a_repeated_state_keeps_the_time_of_its_change(redis, drain):
    """Saying again what is held changes nothing, not its time: the proof's time stays."""
    send_hits(redis, make_hit(uid="c1", timestamp=NOW, consent=GIVEN))
    drain()
    send_hits(redis, make_hit(uid="c1", timestamp=NOW + MINUTE, consent=GIVEN))
    drain()
    pid = person_of(redis, IdKind.UID, "c1")["person_id"]
    assert redis.hget(keyspace.person(pid), "c|ads|uid:c1") == f"1:{NOW}"
    assert len(_proofs(redis, pid)) == 1


def test_an_older_trusted_grant_does_not_undo_a_newer_withdrawal(redis, drain):
    """A server's email grant from before the withdrawal stored stays unapplied, even
    from a trusted source; one from after it applies."""
    for at, granted in ((NOW, False), (NOW - MINUTE, True)):
        send_hits(redis, _server_says("anna@acme.de", at, granted))
        drain()
    assert _email_state(redis, "anna@acme.de")["granted"] is False
    send_hits(redis, _server_says("anna@acme.de", NOW + MINUTE, True))
    drain()
    again = _email_state(redis, "anna@acme.de")
    assert again["granted"] is True and again["at"] == consents.iso(NOW + MINUTE)


def _server_says(email: str, at: int, granted: bool):
    """Return a server's identify at ``at`` granting or withdrawing ``email`` consent."""
    return make_identify(email)._replace(timestamp=at, consent={"email": granted})


def test_a_stale_analytics_withdrawal_unlinks_the_cookie_but_keeps_newer_states(redis, drain):
    """A browser's withdrawal older than the analytics state held still unlinks its cookie
    (the safe way), but records no change over the newer state."""
    send_hits(redis, make_hit(uid="c1", timestamp=NOW, consent=GIVEN))
    send_hits(redis, make_identify("anna@acme.de", uid="c1"))
    drain()
    pid = person_of(redis, IdKind.EMAIL, "anna@acme.de")["person_id"]
    stale = make_hit(
        uid="c1", type="consent", event="consent", timestamp=NOW - MINUTE, consent={"ads": False}
    )
    withdraw_cookie(redis, pid, stale)
    assert redis.get(keyspace.identifier("uid", "c1")) is None
    assert redis.hget(keyspace.person(pid), "c|ads|uid:c1") == f"1:{NOW}"
    fresh = stale._replace(timestamp=NOW + MINUTE)
    withdraw_cookie(redis, pid, fresh)
    assert redis.hget(keyspace.person(pid), "c|ads|uid:c1") == f"0:{NOW + MINUTE}"


def test_applies_orders_by_time_and_ignores_repeats():
    """The rule itself: a first state applies; a different one applies unless older; the
    same one never does."""
    assert consents.applies(None, True, 5)
    assert consents.applies((True, 10), False, 10) and consents.applies((True, 10), False, 11)
    assert not consents.applies((True, 10), False, 9)
    assert not consents.applies((True, 10), True, 99)


NEWSLETTER_UNSUBSCRIBED = """email,event,time
anna@acme.de,subscribe,2026-09-01T10:00:00Z
anna@acme.de,unsubscribe,2026-09-10T10:00:00Z
"""


def _email_state(redis, email: str) -> dict | None:
    """Return the current email consent record of an address (None: no state)."""
    return consent_of(person_of(redis, IdKind.EMAIL, email), "email", f"email:{email}")


def _import(runner, tmp_path, name: str, text: str) -> None:
    """Import a newsletter CSV through `dmp import newsletter` (which ingests it)."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(cli, ["import", "newsletter", str(path)])
    assert result.exit_code == 0, result.output


def test_old_newsletter_events_imported_after_an_unsubscribe_do_not_re_grant(
    runner, redis, tmp_path
):
    """After the unsubscribe, an export of older events (sent, open, click, subscribe)
    imported later grants nothing: the address stays withdrawn, with no new proof."""
    _import(runner, tmp_path, "first.csv", NEWSLETTER_UNSUBSCRIBED)
    assert _email_state(redis, "anna@acme.de")["granted"] is False
    old = (
        "email,event,time,double_opt_in\n"
        "anna@acme.de,sent,2026-09-08T08:00:00Z,\n"
        "anna@acme.de,open,2026-09-11T09:00:00Z,\n"
        "anna@acme.de,click,2026-09-11T09:01:00Z,\n"
        "anna@acme.de,subscribe,2026-09-09T10:00:00Z,ja\n"
    )
    _import(runner, tmp_path, "late.csv", old)
    person = person_of(redis, IdKind.EMAIL, "anna@acme.de")
    state = consent_of(person, "email", "email:anna@acme.de")
    assert state["granted"] is False and state["event_id"].startswith("nl-")
    proofs = _proofs(redis, person["person_id"])
    assert [p["consent"] for p in proofs] == [{"email": True}, {"email": False}]
    assert {"sent", "open", "click", "subscribe"} <= {t["event"] for t in person["touchpoints"]}


def test_a_newer_subscribe_grants_again_with_its_double_opt_in(runner, redis, tmp_path):
    """A subscribe after the unsubscribe is a new opt-in: granted, its double opt-in kept."""
    _import(runner, tmp_path, "first.csv", NEWSLETTER_UNSUBSCRIBED)
    newer = "email,event,time,doi\nanna@acme.de,subscribe,2026-09-20T10:00:00Z,yes\n"
    _import(runner, tmp_path, "newer.csv", newer)
    state = _email_state(redis, "anna@acme.de")
    assert state["granted"] is True and state["double_opt_in"] is True


def test_opens_and_clicks_grant_nothing_and_sent_grants_in_order(runner, redis, tmp_path):
    """Engagement is no opt-in: an open and a click leave the address without consent; a
    sent (the tool mails only subscribers) grants it."""
    _import(
        runner,
        tmp_path,
        "engaged.csv",
        "email,event,time\nbo@beta.de,open,2026-09-10T09:00:00Z\nbo@beta.de,click,1757494860\n",
    )
    assert _email_state(redis, "bo@beta.de") is None
    _import(runner, tmp_path, "sent.csv", "email,event,time\nbo@beta.de,sent,1757400000\n")
    assert _email_state(redis, "bo@beta.de")["granted"] is True
