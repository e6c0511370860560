"""A public write key cannot forge consent or contact data (issue 13's probe, and its rules).

Every test sends through the real collectors: the tag's /collect and the Segment API with
the site's public write key (what any visitor can read in the page) are claims; the
Segment API with a server key and the imports are trusted.
"""

from __future__ import annotations

import hashlib
import json

from dmp.access import apikeys
from dmp.membership import runs
from dmp.people.identity import IdKind
from dmp.storage import keyspace
from tests.factories import apply_segments, bearer, consent_of, person_of

ORIGIN = "https://www.acme.de"
VICTIM = "vera.victim@acme.de"
EVERYONE = "id: everyone\nname: Everyone\nwhere: {tier: {gte: low}}\n"


def _claim(client, write_key: str, events: list, consent=("analytics", "ads", "email")):
    """Send a tag beacon as an attacker's browser would: the public key, any consent."""
    body = json.dumps({"k": write_key, "consent": list(consent), "sentAt": 1, "events": events})
    resp = client.post(
        "/collect", data=body, headers={"Content-Type": "text/plain", "Origin": ORIGIN}
    )
    assert resp.status_code == 204, resp.data
    return resp


def _server(client, key: str, call: str, body: dict):
    resp = client.post(f"/v1/{call}", json=body, auth=(key, ""))
    assert resp.status_code == 200, resp.data
    return resp


def _victim(client, server_key: str, drain) -> dict:
    """The company's backend knows Vera: email and name, no consent for ads or email."""
    traits = {"email": VICTIM, "firstName": "Vera"}
    _server(client, server_key, "identify", {"userId": "crm-vera", "traits": traits})
    drain()
    victim = person_of(client.application.extensions["dmp"].redis, IdKind.EMAIL, VICTIM)
    assert victim["tier"] == "medium"
    return victim


def test_the_probe_no_phone_no_tier_no_ads_for_a_known_person(
    client, redis, config, write_key, server_key, drain
):
    """The reported probe: one beacon with the public key naming a CRM contact's email,
    a phone number and every consent. The browser may be linked (recorded, undoable);
    the victim gains no phone, no tier, no ads or email consent for their address, and a
    partner looking them up by hashed email learns nothing."""
    victim = _victim(client, server_key, drain)
    traits = {"email": VICTIM, "phone": "+49 171 5550100", "firstName": "Mallory"}
    _claim(client, write_key, [{"type": "identify", "traits": traits}])
    drain()
    after = person_of(redis, IdKind.EMAIL, VICTIM)
    assert after["person_id"] == victim["person_id"]
    assert after["tier"] == "medium"
    assert "phone" not in after["identifiers"] and "phone" not in after["traits"]
    assert after["traits"]["firstName"] == "Vera"  # a trusted trait is not overwritten
    assert consent_of(after, "ads", f"email:{VICTIM}") is None
    assert consent_of(after, "email", f"email:{VICTIM}") is None
    (uid,) = after["identifiers"]["uid"]  # the attacker's own browser: linked, and says so
    assert consent_of(after, "ads", f"uid:{uid}")["trusted"] is False
    assert redis.xlen(keyspace.MERGES) == 0  # a browser new to dmp: linked, nothing merged
    apply_segments(redis, EVERYONE)
    runs.run(redis, config)
    partner = apikeys.create_key(redis, apikeys.Scope.PARTNER, "DSP", ("everyone",))
    digest = hashlib.sha256(VICTIM.encode()).hexdigest()
    got = client.get(
        "/api/v1/lookup", query_string={"email_sha256": digest}, headers=bearer(partner)
    )
    assert got.status_code == 200 and got.get_json() == {"data": []}


def test_a_claim_merging_a_browser_history_into_a_known_lead_is_logged_as_a_claim(
    client, redis, write_key, server_key, drain
):
    """The use case claims exist for: an anonymous browser's history joins the lead it
    signs up as; the merge log says it was a claim, from the tag."""
    victim = _victim(client, server_key, drain)
    # One browser (the test client keeps its cookie): a page view, then the sign-up.
    _claim(client, write_key, [{"type": "page", "url": "https://acme.de/produkte"}])
    drain()
    _claim(client, write_key, [{"type": "identify", "traits": {"email": VICTIM}}])
    drain()
    (_, entry), *_ = redis.xrange(keyspace.MERGES)
    assert entry["into"] == victim["person_id"] and entry["by"] == "claim"
    assert entry["source"] == "tag"
    pages = [t.get("url") for t in person_of(redis, IdKind.EMAIL, VICTIM)["touchpoints"]]
    assert "https://acme.de/produkte" in pages


def test_a_claim_cannot_move_contact_data_into_another_person(
    client, redis, write_key, server_key, drain
):
    """A browser whose own person holds a (claimed) phone, naming a known email: no
    merge (it would raise the known person's tier), a conflict is recorded instead."""
    _victim(client, server_key, drain)
    _claim(client, write_key, [{"type": "identify", "traits": {"phone": "+49 171 5550101"}}])
    drain()
    _claim(client, write_key, [{"type": "identify", "traits": {"email": VICTIM}}])
    drain()
    assert person_of(redis, IdKind.EMAIL, VICTIM)["tier"] == "medium"
    assert redis.xlen(keyspace.MERGES) == 0
    (_, conflict), *_ = redis.xrange(keyspace.CONFLICTS)
    assert "claim" in conflict["reason"]


def test_a_sign_up_form_on_a_new_browser_person_may_add_email_and_phone(
    client, redis, write_key, drain
):
    """A browser's own, untrusted person takes what its form says: email and phone make
    it high, and its email consent is recorded for that email, as a claim."""
    traits = {"email": "new.lead@beta.de", "phone": "+49 171 5550102"}
    _claim(client, write_key, [{"type": "identify", "traits": traits}])
    drain()
    person = person_of(redis, IdKind.EMAIL, "new.lead@beta.de")
    assert person["tier"] == "high" and person["identifiers"]["phone"] == ["+491715550102"]
    proof = consent_of(person, "email", "email:new.lead@beta.de")
    assert proof["granted"] is True and proof["trusted"] is False and proof["source"] == "tag"


def test_a_claim_cannot_withdraw_what_a_trusted_source_holds(
    client, redis, write_key, server_key, drain
):
    """The newsletter consent a server gave for an email stays when a browser claims
    the email and refuses email: a claim neither grants nor withdraws it."""
    body = {
        "userId": "crm-vera",
        "traits": {"email": VICTIM},
        "context": {"consent": {"categoryPreferences": {"email": True}, "version": "v3"}},
    }
    _server(client, server_key, "identify", body)
    drain()
    _claim(client, write_key, [{"type": "identify", "traits": {"email": VICTIM}}], ("analytics",))
    drain()
    proof = consent_of(person_of(redis, IdKind.EMAIL, VICTIM), "email", f"email:{VICTIM}")
    assert proof["granted"] is True and proof["trusted"] is True and proof["version"] == "v3"


def test_the_public_key_on_the_segment_api_is_a_browser(client, redis, config, write_key, drain):
    """analytics.js sends the public key to /v1: without analytics consent its events count
    only in aggregate; with it they are claims (no consent for trusted addresses)."""
    body = {"userId": "u-1", "traits": {"email": "p@acme.de"}}
    _server(client, write_key, "identify", body)
    drain()
    assert redis.get(keyspace.identifier("email", "p@acme.de")) is None
    consented = {**body, "context": {"consent": {"categoryPreferences": {"analytics": True}}}}
    _server(client, write_key, "identify", consented)
    drain()
    person = person_of(redis, IdKind.EMAIL, "p@acme.de")
    assert person["tier"] == "medium"
    assert redis.smembers(keyspace.person(person["person_id"], "trusted")) == set()


def test_a_server_key_is_refused_by_the_pixel_and_the_tag(client, redis, server_key):
    """A server key is a secret: the browser collectors take no hit with it."""
    gif = client.get("/p.gif", query_string={"k": server_key, "consent": "analytics"})
    assert gif.status_code == 200 and redis.xlen(keyspace.partition(0).stream) == 0
    body = json.dumps({"k": server_key, "consent": ["analytics"], "events": [{"type": "page"}]})
    resp = client.post(
        "/collect", data=body, headers={"Content-Type": "text/plain", "Origin": ORIGIN}
    )
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"
