"""The sites and keys pages through the Flask test client: snippets, new sites, keys
shown once and revoked, bad input and roles."""

from __future__ import annotations

import dataclasses
import re
from html import unescape

from dmp.access import apikeys, sites
from dmp.access.users import Role
from dmp.app import create_app
from tests.factories import bearer
from tests.ui.conftest import log_in

KEY = re.compile(r"dmp_ad_[A-Za-z0-9_-]{20,}")


def test_the_list_shows_each_site_with_its_snippets_filled_in(as_viewer, redis) -> None:
    """Every site shows its tag and pixel with its write key and this server's address."""
    site, key = sites.add_site(redis, "Acme GmbH " + "x" * 50, ["acme.de", "www.acme.de"])
    html = unescape(as_viewer.get("/ui/sites/").get_data(as_text=True))
    assert f'<script async src="http://localhost/dmp.js" data-key="{key}"></script>' in html
    assert f'var src = "http://localhost/p.gif?k={key}&e=page&url="' in html  # the pixel
    assert "__tcfapi" in html and "consent=analytics" not in html  # the CMP's word, no grant
    assert "Pixel in ads" not in html  # dmp's operator is no TCF vendor here
    assert "acme.de, www.acme.de" in html and 'data-copy="#tag-acme-gmbh-x' in html
    assert "Add a site" not in html  # a viewer adds nothing


def test_a_tcf_vendor_gets_the_ad_pixel_with_its_macros(config, redis, users) -> None:
    """With DMP_TCF_VENDOR_ID set, the page shows the pixel for ads with IAB's macros."""
    _, key = sites.add_site(redis, "Acme", ["acme.de"])
    app = create_app(dataclasses.replace(config, tcf_vendor_id=1234))
    try:
        client = app.test_client()
        log_in(client, users[Role.VIEWER])
        html = unescape(client.get("/ui/sites/").get_data(as_text=True))
    finally:
        app.extensions["dmp"].appender.close()
    assert "Pixel in ads" in html
    assert f"p.gif?k={key}&e=impression&gdpr=${{GDPR}}&gdpr_consent=${{GDPR_CONSENT_1234}}" in html


def test_the_snippets_honour_a_proxy(config, redis, users) -> None:
    """Behind a proxy that says HTTPS (DMP_PROXY_HOPS=1), the snippets use https."""
    sites.add_site(redis, "Acme", ["acme.de"])
    app = create_app(dataclasses.replace(config, proxy_hops=1))
    try:
        client = app.test_client()
        log_in(client, users[Role.VIEWER])
        headers = {"X-Forwarded-Proto": "https"}
        html = unescape(client.get("/ui/sites/", headers=headers).get_data(as_text=True))
    finally:
        app.extensions["dmp"].appender.close()
    assert 'src="https://localhost/dmp.js"' in html


def test_no_site_yet_says_how_to_add_one(as_marketer) -> None:
    """Without sites the page explains what a site is and who adds one."""
    html = as_marketer.get("/ui/sites/").get_data(as_text=True)
    assert "No site yet" in html and "dmp sites add" in html


def test_an_admin_adds_a_site_and_sees_its_snippets(as_admin, redis) -> None:
    """A new site's domains are normalised and its snippets carry its new write key."""
    res = as_admin.post("/ui/sites/", {"name": "Beta AG", "domains": "https://Beta.de/x, beta.ch"})
    assert res.status_code == 303 and res.headers["Location"].endswith("#site-beta-ag")
    assert sites.get_site(redis, "beta-ag").domains == ("beta.de", "beta.ch")
    html = unescape(as_admin.get(res.headers["Location"]).get_data(as_text=True))
    assert f'data-key="{sites.public_write_key(redis, "beta-ag")}"' in html
    assert "The site is added" in html


def test_a_bad_domain_is_named_and_nothing_is_added(as_admin, redis) -> None:
    """A bad domain re-renders the form (422) naming it; a duplicate name is refused too."""
    res = as_admin.post("/ui/sites/", {"name": "Gamma", "domains": "gamma.de, not a_domain!"})
    assert res.status_code == 422
    assert "Not a domain name: a_domain!" in res.get_data(as_text=True)
    assert sites.list_sites(redis) == []
    sites.add_site(redis, "Gamma", ["gamma.de"])
    again = as_admin.post("/ui/sites/", {"name": "gamma", "domains": "gamma.de"})
    assert again.status_code == 422 and "exists already" in again.get_data(as_text=True)
    long = as_admin.post("/ui/sites/", {"name": "x" * 101, "domains": "x.de"})
    assert long.status_code == 422


def test_german_messages_for_a_bad_domain(as_admin) -> None:
    """The form's messages follow the page's language."""
    res = as_admin.post(
        "/ui/sites/", {"name": "Delta", "domains": "-bad-"}, headers={"Accept-Language": "de"}
    )
    assert res.status_code == 422 and "Kein Domainname: -bad-" in res.get_data(as_text=True)


def test_marketers_and_viewers_manage_no_sites_or_keys(as_marketer, as_viewer, redis) -> None:
    """Only admins add sites and see, create or revoke keys (403 otherwise)."""
    key = apikeys.create_key(redis, apikeys.Scope.ADMIN, "ops")
    kid = apikeys.hash_secret(key)[:12]
    for session in (as_marketer, as_viewer):
        assert session.get("/ui/sites/keys").status_code == 403
        assert session.post("/ui/sites/keys", {"scope": "admin"}).status_code == 403
        assert session.post(f"/ui/sites/keys/{kid}/revoke").status_code == 403
        assert session.post("/ui/sites/", {"name": "X", "domains": "x.de"}).status_code == 403
        assert "API keys" not in session.get("/ui/sites/").get_data(as_text=True)
    assert apikeys.check_key(redis, key, apikeys.Scope.ADMIN)


def test_a_new_key_is_shown_once_and_a_revoked_one_stops_working(as_admin, client) -> None:
    """The new key is on the answer to the POST only; the list never shows it; revoked,
    the admin API refuses it."""
    res = as_admin.post("/ui/sites/keys", {"scope": "admin", "name": "ops <script>"})
    assert res.status_code == 201
    key = KEY.search(res.get_data(as_text=True)).group(0)
    assert "shown only this once" in res.get_data(as_text=True)
    assert "ops &lt;script&gt;" in res.get_data(as_text=True)
    assert client.get("/api/v1/funnel", headers=bearer(key)).status_code != 401
    listing = as_admin.get("/ui/sites/keys").get_data(as_text=True)
    kid = apikeys.hash_secret(key)[:12]
    assert key not in listing and kid in listing and "ops &lt;script&gt;" in listing
    gone = as_admin.post(f"/ui/sites/keys/{kid}/revoke")
    assert gone.status_code == 303
    assert "no longer works" in as_admin.get(gone.headers["Location"]).get_data(as_text=True)
    assert client.get("/api/v1/funnel", headers=bearer(key)).status_code == 401
    assert as_admin.post(f"/ui/sites/keys/{kid}/revoke").status_code == 404


def test_key_rules_of_the_cli_hold(as_admin, redis) -> None:
    """A server key needs a site, a partner key audiences, and no other key either."""
    sites.add_site(redis, "Acme", ["acme.de"])
    cases = [
        ({"scope": "server"}, "needs a site"),
        ({"scope": "admin", "site": "acme"}, "needs a site"),
        ({"scope": "partner"}, "needs audiences"),
        ({"scope": "nonsense"}, "Not a valid choice"),
        ({"scope": "server", "site": "nowhere"}, "Not a valid choice"),
        ({"scope": "admin", "name": "n" * 101}, "100"),
    ]
    for data, message in cases:
        res = as_admin.post("/ui/sites/keys", data)
        assert res.status_code == 422, data
        assert message in res.get_data(as_text=True), data
    assert apikeys.list_keys(redis) == []
    made = as_admin.post("/ui/sites/keys", {"scope": "server", "site": "acme"})
    assert made.status_code == 201
    assert [k.site for k in apikeys.list_keys(redis)] == ["acme"]


def test_a_server_key_from_the_page_writes_trusted(as_admin, redis, client, drain) -> None:
    """The server key made on the page authenticates the Segment API for its site."""
    sites.add_site(redis, "Acme", ["acme.de"])
    res = as_admin.post("/ui/sites/keys", {"scope": "server", "site": "acme"})
    key = re.search(r"dmp_se_[A-Za-z0-9_-]{20,}", res.get_data(as_text=True)).group(0)
    sent = client.post("/v1/track", json={"userId": "u1", "event": "demo_request"}, auth=(key, ""))
    assert sent.status_code == 200
    assert drain() >= 1
