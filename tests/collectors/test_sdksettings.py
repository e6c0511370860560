"""The settings document analytics.js 2.0 loads from ``{cdnURL}/v1/projects/<key>/settings``."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from dmp.app import create_app
from tests.factories import read_metric, scrape

PAGE = "https://www.acme.de"


def _url(key: str) -> str:
    return f"/v1/projects/{key}/settings"


def _metric(client, outcome: str) -> float:
    return read_metric(scrape(client), "dmp_hits_total", collector="api", outcome=outcome) or 0


def _readable_problem(resp, status: int, origin: str = PAGE) -> dict:
    """Check a problem answer that the page of ``origin`` can read; return its body."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    return resp.get_json()


def test_the_document_sends_events_to_this_dmp_and_nowhere_else(client, write_key):
    """The Segment.io integration alone, its apiHost this host + /v1 and its protocol the
    request's; remote metrics off and no plugins; readable by the site's page, cacheable
    for five minutes, varying by Origin."""
    resp = client.get(_url(write_key), headers={"Origin": PAGE})
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    doc = resp.get_json()
    assert list(doc["integrations"]) == ["Segment.io"]
    segment = doc["integrations"]["Segment.io"]
    assert (segment["apiKey"], segment["apiHost"], segment["protocol"]) == (
        write_key,
        "localhost/v1",
        "http",
    )
    assert doc["metrics"]["sampleRate"] == 0 and doc["metrics"]["host"] == "localhost/v1"
    assert doc["remotePlugins"] == []
    assert not {"plan", "middlewareSettings", "enabledMiddleware", "edgeFunction"} & set(doc)
    assert resp.headers["Access-Control-Allow-Origin"] == PAGE
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    assert "Origin" in resp.headers.get_all("Vary")


def test_host_path_prefix_and_scheme_are_the_requests(client, write_key):
    """dmp served as https://t.acme.de/dmp: the events go to t.acme.de/dmp/v1 over https."""
    resp = client.get(_url(write_key), base_url="https://t.acme.de:8443/dmp")
    assert resp.status_code == 200
    segment = resp.get_json()["integrations"]["Segment.io"]
    assert (segment["apiHost"], segment["protocol"]) == ("t.acme.de:8443/dmp/v1", "https")
    # Without an Origin (curl, a same-origin GET): served, for no page in particular.
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert resp.headers["Vary"] == "Origin"


@pytest.mark.parametrize(("hops", "protocol"), [(1, "https"), (0, "http")])
def test_the_protocol_behind_a_proxy_follows_proxy_hops(config, write_key, hops, protocol):
    """Behind DMP_PROXY_HOPS trusted proxies X-Forwarded-Proto gives the protocol; with
    none it is not believed."""
    app = create_app(dataclasses.replace(config, proxy_hops=hops))
    try:
        resp = app.test_client().get(
            _url(write_key),
            headers={
                "Host": "t.acme.de",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-For": "1.2.3.4",
            },
        )
    finally:
        app.extensions["dmp"].appender.close()
    segment = resp.get_json()["integrations"]["Segment.io"]
    assert (segment["apiHost"], segment["protocol"]) == ("t.acme.de/v1", protocol)


def test_a_subdomain_of_the_site_may_read_it(client, write_key):
    """A page on a subdomain of one of the site's domains is the site's page."""
    resp = client.get(_url(write_key), headers={"Origin": "https://blog.acme.de"})
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://blog.acme.de"


def test_another_origin_gets_a_readable_403_counted_and_logged(client, write_key, caplog):
    """A page of another origin cannot load the settings: the 403 problem is readable by
    it (the console shows why), counted as origin_not_allowed and logged with the site's
    domains."""
    caplog.set_level(logging.WARNING, logger="collectors.refusals")
    resp = client.get(_url(write_key), headers={"Origin": "https://evil.example"})
    body = _readable_problem(resp, 403, "https://evil.example")
    assert "https://evil.example is not a domain of the site" in body["detail"]
    assert "Segment.io" not in resp.get_data(as_text=True)
    assert _metric(client, "origin_not_allowed") == 1
    (line,) = [r.getMessage() for r in caplog.records if "evil.example" in r.getMessage()]
    assert "acme.de, localhost" in line


def test_an_unknown_key_is_a_readable_404(client):
    """No site has the key: 404 problem the page can read, counted as unknown_key."""
    body = _readable_problem(client.get(_url("wk_nobody"), headers={"Origin": PAGE}), 404)
    assert body["title"] == "Unknown write key"
    assert _metric(client, "unknown_key") == 1


def test_a_server_key_has_no_document(client, server_key):
    """A server key is a secret: it has no settings (it would end up in pages' URLs)."""
    _readable_problem(client.get(_url(server_key), headers={"Origin": PAGE}), 404)


@pytest.mark.parametrize(
    "key",
    [
        "wk_" + "x" * 5000,  # huge
        "wk_%C3%BC%E2%82%AC",  # non-ASCII
        "%00",
        "..",
        "..%2F..%2Fetc%2Fpasswd",  # a path once decoded: no such route
        "%2e%2e",
        "wk_%0d%0aSet-Cookie:%20x=1",
        "<script>",
    ],
)
def test_hostile_keys_are_404_problems(client, key):
    """Keys that are no key, or that try to be a path, are a 404 problem; nothing else."""
    resp = client.get(_url(key), headers={"Origin": PAGE})
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    assert "Set-Cookie" not in resp.headers


@pytest.mark.parametrize("host", ["evil host", "a/b", "acme.de:port", "x@acme.de"])
def test_a_host_header_that_is_no_host_is_a_400(client, write_key, host):
    """dmp never hands browsers an apiHost made of a Host header that is not a host."""
    resp = client.get(_url(write_key), headers={"Host": host, "Origin": PAGE})
    body = _readable_problem(resp, 400)
    assert body["title"] == "Bad host"


def test_only_get(client, write_key):
    """The document is read, not written."""
    resp = client.post(_url(write_key), headers={"Origin": PAGE})
    assert resp.status_code == 405 and resp.mimetype == "application/problem+json"
