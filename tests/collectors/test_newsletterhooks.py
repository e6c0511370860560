"""The newsletter tools' own webhooks: Mailchimp, Brevo and CleverReach unsubscribes
withdraw the address's email consent (the tool in the proof), the person leaves every
newsletter audience, and nothing older brings them back."""

from __future__ import annotations

from collections import Counter

import pytest

from dmp.access.apikeys import Scope, create_key
from dmp.cli import cli
from dmp.membership.audience import read_contacts
from dmp.people import profiles
from dmp.people.identity import Identifier, IdKind
from dmp.records import Category
from dmp.storage import keyspace
from tests.factories import bearer, consent_of, person_of

ANNA = "anna@acme.de"
FIRED = "2026-09-21 14:13:20"  # Mailchimp's fired_at (UTC)
FIRED_S = 1_790_000_000  # the same moment in epoch seconds (Brevo's ts_event)
UNSUBSCRIBE = {
    "type": "unsubscribe",
    "fired_at": FIRED,
    "data[action]": "unsub",
    "data[reason]": "manual",
    "data[email]": "Anna@Acme.de",
    "data[list_id]": "a6b5da1054",
    "data[merges][EMAIL]": "Anna@Acme.de",
}


def _mailchimp(client, key: str, form: dict, query: str = ""):
    """Post a form-encoded Mailchimp call with the import key in the URL."""
    return client.post(f"/hooks/newsletter/mailchimp?key={key}{query}", data=form)


def _email_consent(client, redis, admin_key: str, email: str = ANNA) -> dict:
    """Return the current email consent of an address as GET …/consents shows it."""
    pid = profiles.find_person(redis, Identifier(IdKind.EMAIL, email))
    assert pid is not None, f"nobody owns {email}"
    resp = client.get(f"/api/v1/persons/{pid}/consents", headers=bearer(admin_key))
    assert resp.status_code == 200
    (record,) = [r for r in resp.get_json()["current"]["email"] if r["identifier"].endswith(email)]
    return record


def _newsletter_audience(redis, email: str = ANNA) -> tuple[list, Counter]:
    """Return who a newsletter destination would hold of the address's person, and why not."""
    skipped: Counter[str] = Counter()
    pid = profiles.find_person(redis, Identifier(IdKind.EMAIL, email))
    return read_contacts(redis, [pid], Category.EMAIL, skipped), skipped


def test_mailchimps_unsubscribe_withdraws_email_consent_with_the_tool_in_the_proof(
    client, redis, drain, import_key, admin_key
):
    """Mailchimp's form-encoded unsubscribe: 200, and the address's email consent is
    withdrawn at fired_at with mailchimp, its event and reason in the proof."""
    subscribed = {**UNSUBSCRIBE, "type": "subscribe", "fired_at": "2026-09-01 08:00:00"}
    resp = _mailchimp(client, import_key, subscribed, "&double_opt_in=true")
    assert resp.status_code == 200 and resp.get_json()["accepted"] == 1
    drain()
    granted = _email_consent(client, redis, admin_key)
    assert granted["granted"] is True and granted["double_opt_in"] is True
    assert _newsletter_audience(redis)[0][0].double_opt_in is True
    resp = _mailchimp(client, import_key, UNSUBSCRIBE)
    assert resp.status_code == 200
    assert resp.get_json() == {"accepted": 1, "duplicates": 0, "erased_before": 0, "ignored": 0}
    drain()
    record = _email_consent(client, redis, admin_key)
    assert record["granted"] is False and record["at"] == "2026-09-21T14:13:20.000+00:00"
    assert (record["tool"], record["tool_event"], record["reason"]) == (
        "mailchimp",
        "unsubscribe",
        "manual",
    )
    assert record["trusted"] is True and record["source"] == "newsletter"
    assert _newsletter_audience(redis) == ([], Counter({"unsubscribed": 1}))


def test_mailchimps_cleaned_withdraws_and_says_why(client, redis, drain, import_key, admin_key):
    """A cleaned address (hard bounce) withdraws email consent; the proof says hard bounce."""
    cleaned = {"type": "cleaned", "fired_at": FIRED, "data[email]": ANNA, "data[reason]": "hard"}
    assert _mailchimp(client, import_key, cleaned).status_code == 200
    drain()
    record = _email_consent(client, redis, admin_key)
    assert record["granted"] is False and record["reason"] == "hard bounce"
    assert record["tool_event"] == "cleaned"
    assert _newsletter_audience(redis)[1] == Counter({"unsubscribed": 1})


def test_mailchimps_url_check_answers_200(client, import_key):
    """Mailchimp saves a webhook only if a GET of its URL answers 200."""
    resp = client.get(f"/hooks/newsletter/mailchimp?key={import_key}")
    assert resp.status_code == 200 and resp.get_json() == {"tool": "mailchimp"}


def test_mailchimps_address_change_moves_the_consent(client, redis, drain, import_key):
    """upemail: the old address is withdrawn (it left the list), the new one granted."""
    change = {
        "type": "upemail",
        "fired_at": FIRED,
        "data[old_email]": ANNA,
        "data[new_email]": "anna.neu@acme.de",
    }
    assert _mailchimp(client, import_key, change).get_json()["accepted"] == 2
    drain()
    old = consent_of(person_of(redis, IdKind.EMAIL, ANNA), "email", f"email:{ANNA}")
    new_email = "anna.neu@acme.de"
    new = consent_of(person_of(redis, IdKind.EMAIL, new_email), "email", f"email:{new_email}")
    assert (old["granted"], new["granted"]) == (False, True)
    assert old["reason"] == new["reason"] == "address changed"


@pytest.mark.parametrize(
    "form",
    [
        {**UNSUBSCRIBE, "type": "profile"},
        {**UNSUBSCRIBE, "type": "campaign"},
        {**UNSUBSCRIBE, "type": "something-new"},
        {**UNSUBSCRIBE, "data[action]": "delete"},
    ],
)
def test_mailchimp_events_dmp_does_not_act_on_are_acknowledged(client, redis, import_key, form):
    """Profile updates, campaigns, unknown types and deleted members: 200, counted as
    ignored (in the answer and /metrics), nothing put on the stream."""
    resp = _mailchimp(client, import_key, form)
    assert resp.status_code == 200 and resp.get_json()["ignored"] == 1
    assert redis.xlen(keyspace.partition(0).stream) == 0
    metrics = redis.hgetall(keyspace.METRICS)
    assert metrics['dmp_newsletter_hook_ignored_total{tool="mailchimp"}'] == "1"


@pytest.mark.parametrize(
    ("event", "said", "reason"),
    [
        ("unsubscribed", None, ""),
        ("hard_bounce", None, "hard bounce"),
        ("hardBounce", "mailbox unknown", "hard bounce: mailbox unknown"),
        ("spam", "undesired", "spam complaint: undesired"),
    ],
)
def test_brevos_unsubscribe_bounce_and_complaint_withdraw(
    client, redis, drain, import_key, admin_key, event, said, reason
):
    """Brevo's JSON unsubscribed, hardBounce and spam events (a bearer import key, as
    Brevo's token auth sends it) withdraw the address's email consent."""
    body = {
        "id": 99,
        "camp_id": 42,
        "email": ANNA,
        "campaign name": "September",
        "event": event,
        "reason": said,
        "ts_event": FIRED_S,
        "list_id": [3],
    }
    resp = client.post("/hooks/newsletter/brevo", json=body, headers=bearer(import_key))
    assert resp.status_code == 200 and resp.get_json()["accepted"] == 1
    drain()
    record = _email_consent(client, redis, admin_key)
    assert record["granted"] is False and record["tool"] == "brevo"
    assert record["tool_event"] == event and record.get("reason", "") == reason
    assert record["at"] == "2026-09-21T14:13:20.000+00:00"


def test_brevos_campaign_delivery_grants_and_other_deliveries_do_not(
    client, redis, drain, import_key
):
    """A campaign's delivered grants (Brevo mails campaigns to subscribers only); a
    delivery without a campaign (a transactional mail) and a soft bounce are ignored."""
    base = {"email": ANNA, "ts_event": FIRED_S}
    for body, ignored in (
        ({**base, "event": "delivered"}, 1),
        ({**base, "event": "softBounce", "camp_id": 1}, 1),
        ({**base, "event": "delivered", "camp_id": 1}, 0),
    ):
        resp = client.post(f"/hooks/newsletter/brevo?key={import_key}", json=body)
        assert resp.status_code == 200 and resp.get_json()["ignored"] == ignored
    drain()
    record = consent_of(person_of(redis, IdKind.EMAIL, ANNA), "email", f"email:{ANNA}")
    assert record["granted"] is True and record["tool_event"] == "delivered"


def test_cleverreachs_unsubscribe_withdraws(client, redis, drain, import_key, admin_key):
    """CleverReach's receiver.unsubscribed withdraws the address it names."""
    body = {
        "event": "receiver.unsubscribed",
        "condition": "1939",
        "payload": {"group_id": 1939, "pool_id": 4711, "email": ANNA},
    }
    resp = client.post(f"/hooks/newsletter/cleverreach?key={import_key}", json=body)
    assert resp.status_code == 200 and resp.get_json()["accepted"] == 1
    drain()
    record = _email_consent(client, redis, admin_key)
    assert record["granted"] is False and record["tool"] == "cleverreach"
    assert record["tool_event"] == "receiver.unsubscribed"


def test_cleverreach_events_without_an_address_are_acknowledged(client, redis, import_key):
    """A receiver named only by its ids, and events of other kinds: 200, ignored."""
    for body in (
        {"event": "receiver.unsubscribed", "payload": {"group_id": 1, "pool_id": 2}},
        {"event": "form.created", "payload": {"group_id": 1}},
    ):
        resp = client.post(f"/hooks/newsletter/cleverreach?key={import_key}", json=body)
        assert resp.status_code == 200 and resp.get_json()["ignored"] == 1
    assert redis.xlen(keyspace.partition(0).stream) == 0


def test_cleverreachs_verification_gets_its_token_and_secret_back(client, import_key):
    """The registration's GET with ?secret= is answered '<verify token> <secret>'; without
    the verify token in the URL it is a 400 saying how to add it."""
    url = f"/hooks/newsletter/cleverreach?key={import_key}&verify=damnSecretToken&secret=1029384756"
    resp = client.get(url)
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    assert resp.data == b"damnSecretToken 1029384756"
    bare = client.get(f"/hooks/newsletter/cleverreach?key={import_key}&secret=1029384756")
    assert bare.status_code == 400 and bare.mimetype == "application/problem+json"
    assert "&verify=" in bare.get_json()["detail"]


ROUTES = [
    ("post", "/hooks/newsletter/mailchimp", {"data": UNSUBSCRIBE}),
    ("get", "/hooks/newsletter/mailchimp", {}),
    ("post", "/hooks/newsletter/brevo", {"json": {"event": "spam", "email": ANNA, "ts": 1}}),
    ("post", "/hooks/newsletter/cleverreach", {"json": {"event": "receiver.subscribed"}}),
    ("get", "/hooks/newsletter/cleverreach", {"query_string": {"secret": "1", "verify": "x" * 10}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES)
def test_calls_without_a_valid_import_key_are_401(client, redis, admin_key, method, path, kwargs):
    """No key, a made-up key, or an admin key in the URL (it would end up in logs):
    401 problem+json, and nothing stored."""
    for key in ("", "dmp_im_made-up", admin_key):
        query = {**kwargs.get("query_string", {}), **({"key": key} if key else {})}
        resp = client.open(path, method=method.upper(), **{**kwargs, "query_string": query})
        assert resp.status_code == 401 and resp.mimetype == "application/problem+json"
    assert redis.xlen(keyspace.partition(0).stream) == 0


@pytest.mark.parametrize(
    ("path", "kwargs", "detail"),
    [
        ("mailchimp", {"data": {"fired_at": FIRED, "data[email]": ANNA}}, "type: expected"),
        ("mailchimp", {"json": UNSUBSCRIBE}, "type: expected"),
        ("mailchimp", {"data": {**UNSUBSCRIBE, "data[email]": "nobody"}}, "not an email"),
        ("mailchimp", {"data": {**UNSUBSCRIBE, "fired_at": "yesterday"}}, "not an ISO time"),
        ("mailchimp", {"data": {**UNSUBSCRIBE, "data[email]": "a\x00@b.de"}}, "printable"),
        ("mailchimp", {"data": {**UNSUBSCRIBE, "type": "x" * 33}}, "at most 32"),
        ("brevo", {"data": "{not json", "content_type": "application/json"}, "not valid JSON"),
        ("brevo", {"json": [{"event": "spam"}]}, "must be a JSON object"),
        ("brevo", {"json": {"email": ANNA}}, "event: expected"),
        ("brevo", {"json": {"event": 7, "email": ANNA}}, "event: expected"),
        ("brevo", {"json": {"event": "spam", "email": ANNA, "ts_event": "1"}}, "ts_event"),
        ("brevo", {"json": {"event": "spam", "email": ANNA}}, "time: missing"),
        ("brevo", {"json": {"event": "spam", "email": ["x"], "ts": 1}}, "email"),
        (
            "brevo",
            {"data": '{"event": "spam", "email": "\\ud800"}', "content_type": "application/json"},
            "surrogate",
        ),
        ("brevo", {"data": "[" * 5000 + "]" * 5000, "content_type": "application/json"}, "JSON"),
        ("brevo", {"data": "x" * 600_000, "content_type": "application/json"}, "at most"),
        ("cleverreach", {"json": {"event": "receiver.unsubscribed", "payload": "x"}}, "payload"),
        ("cleverreach", {"json": {"payload": {"email": ANNA}}}, "event: expected"),
    ],
)
def test_malformed_calls_are_400_problems(client, redis, import_key, path, kwargs, detail):
    """Bodies that are not what the tool sends (missing or mistyped fields, bad JSON,
    hostile text, too large): a 400 problem+json whose detail names the fault."""
    resp = client.post(f"/hooks/newsletter/{path}?key={import_key}", **kwargs)
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert detail in resp.get_json()["detail"]
    assert redis.xlen(keyspace.partition(0).stream) == 0


def test_a_resent_call_is_a_duplicate(client, import_key):
    """The tool retrying the same call adds nothing twice."""
    assert _mailchimp(client, import_key, UNSUBSCRIBE).get_json()["accepted"] == 1
    again = _mailchimp(client, import_key, UNSUBSCRIBE).get_json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)


def test_a_later_import_does_not_re_add_an_unsubscribed_person(
    client, runner, redis, drain, import_key, tmp_path
):
    """After Brevo's unsubscribe, a newsletter export imported later (sent, open and a
    subscribe, all from before it) leaves the person out of every newsletter audience;
    only a newer subscribe (a new opt-in) brings them back."""
    unsubscribe = {"event": "unsubscribed", "email": ANNA, "ts_event": FIRED_S}
    assert (
        client.post(f"/hooks/newsletter/brevo?key={import_key}", json=unsubscribe).status_code
        == 200
    )
    drain()
    older = (
        "email,event,time\n"
        f"{ANNA},sent,2026-09-20T08:00:00Z\n"
        f"{ANNA},open,2026-09-22T08:00:00Z\n"
        f"{ANNA},subscribe,2026-09-19T08:00:00Z\n"
    )
    (tmp_path / "old.csv").write_text(older, encoding="utf-8")
    assert runner.invoke(cli, ["import", "newsletter", str(tmp_path / "old.csv")]).exit_code == 0
    assert _newsletter_audience(redis) == ([], Counter({"unsubscribed": 1}))
    newer = {**UNSUBSCRIBE, "type": "subscribe", "fired_at": "2026-09-23 09:00:00"}
    assert _mailchimp(client, import_key, newer, "&double_opt_in=true").status_code == 200
    drain()
    (contact,), _ = _newsletter_audience(redis)
    assert contact.email == ANNA and contact.double_opt_in is True


def test_an_admin_key_as_bearer_works_too(client, redis, admin_key):
    """An admin key may call the hooks as a bearer token (never in the URL)."""
    importer = create_key(redis, Scope.IMPORT, "brevo")
    body = {"event": "opened", "email": ANNA, "ts_event": FIRED_S}
    for headers in (bearer(admin_key), bearer(importer)):
        resp = client.post("/hooks/newsletter/brevo", json=body, headers=headers)
        assert resp.status_code == 200
