"""Every collector minimises URLs and titles before a hit reaches the stream: the pixel,
the tag, the Segment API and the newsletter webhook; a site keeps its own parameters."""

from __future__ import annotations

import json

import pytest

from collectors.redaction import REDACTED
from dmp.access import sites
from dmp.cli import main
from tests.factories import bearer, stream_hits

LEAKY = (
    "https://acme.de/reset/5d41402abc4b2a76b9719d911017c592?email=anna@acme.de&utm_source=nl&q=x"
)
CLEAN = f"https://acme.de/reset/{REDACTED}?utm_source=nl"
TITLE = "Hello anna@acme.de"


def _stored(redis) -> list[tuple[str, str, str]]:
    return [(h.url, h.referrer, h.title) for h in stream_hits(redis)]


def test_the_pixel_stores_minimised_urls_and_titles(client, redis, write_key) -> None:
    """A pixel hit whose URL, referrer and title carry an email and a token is stored
    without them; the campaign tag stays."""
    query = {"k": write_key, "url": LEAKY, "ref": LEAKY, "title": TITLE}
    assert client.get("/p.gif", query_string=query).status_code == 200
    assert _stored(redis) == [(CLEAN, CLEAN, f"Hello {REDACTED}")]


def test_the_tag_stores_minimised_urls_and_titles(client, redis, write_key) -> None:
    """A tag beacon's events are minimised the same way."""
    event = {"type": "page", "url": LEAKY, "ref": LEAKY, "title": TITLE}
    body = json.dumps({"k": write_key, "consent": ["analytics"], "events": [event]})
    headers = {"Content-Type": "text/plain", "Origin": "https://www.acme.de"}
    assert client.post("/collect", data=body, headers=headers).status_code == 204
    assert _stored(redis) == [(CLEAN, CLEAN, f"Hello {REDACTED}")]


def test_the_segment_api_stores_minimised_urls_and_titles(client, redis, write_key) -> None:
    """A Segment page call's url, referrer and name are minimised the same way."""
    body = {"userId": "u1", "name": TITLE, "properties": {"url": LEAKY, "referrer": LEAKY}}
    assert client.post("/v1/page", json=body, auth=(write_key, "")).status_code == 200
    assert _stored(redis) == [(CLEAN, CLEAN, f"Hello {REDACTED}")]


def test_newsletter_click_urls_lose_subscriber_ids(client, redis, import_key) -> None:
    """A tracked newsletter link keeps its page and campaign tags, not the subscriber id."""
    event = {"email": "anna@acme.de", "event": "click", "time": 1757494860, "url": LEAKY}
    resp = client.post("/hooks/newsletter", json=event, headers=bearer(import_key))
    assert resp.status_code == 202
    assert [h.url for h in stream_hits(redis)] == [CLEAN]


def test_a_site_keeps_the_parameters_it_lists(client, redis, write_key, main_argv, capsys):
    """`dmp sites keep-params` makes the site's URLs keep those parameters (values that look
    like secrets are still redacted); other sites' URLs do not keep them."""
    main([*main_argv, "sites", "keep-params", "acme-gmbh", "Q", "page"])
    assert "keeps utm_*, page, q" in capsys.readouterr().out
    assert sites.get_site(redis, "acme-gmbh").keep_params == {"q", "page"}
    url = "https://acme.de/s?q=pricing&page=anna@acme.de&sid=9"
    client.get("/p.gif", query_string={"k": write_key, "url": url})
    assert [h.url for h in stream_hits(redis)] == [f"https://acme.de/s?q=pricing&page={REDACTED}"]


def test_keep_params_refuses_what_is_no_parameter_name(write_key, main_argv, capsys) -> None:
    """A name with spaces or '=' is bad input: exit 2 and one line naming it."""
    with pytest.raises(SystemExit) as exited:
        main([*main_argv, "sites", "keep-params", "acme-gmbh", "a=b"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert err.startswith("dmp: error: not a query parameter name: 'a=b'")
