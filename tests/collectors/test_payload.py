"""Request bodies shared by the tag and the Segment API."""

from __future__ import annotations

import pytest

from dmp.storage import keyspace


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("path", ["/v1/track", "/collect"])
def test_non_json_numbers_are_refused(client, redis, write_key, path, constant):
    """NaN and Infinity, which Python's parser would take, are not JSON: 400, nothing stored."""
    if path == "/collect":
        body = (
            f'{{"k": "{write_key}", "events": [{{"type": "page", "props": {{"x": {constant}}}}}]}}'
        )
    else:
        props = f'"properties": {{"x": {constant}}}'
        body = f'{{"writeKey": "{write_key}", "userId": "u", "event": "E", {props}}}'
    resp = client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert constant in resp.get_json()["detail"]
    assert redis.xlen(keyspace.partition(0).stream) == 0


@pytest.mark.parametrize("path", ["/v1/track", "/collect"])
def test_lone_surrogates_are_refused(client, redis, write_key, path, app):
    """A lone UTF-16 surrogate is valid JSON but no text: 400, nothing stored, still serving."""
    if path == "/collect":
        body = f'{{"k": "{write_key}", "events": [{{"type": "page", "title": "a\\ud800b"}}]}}'
    else:
        body = f'{{"writeKey": "{write_key}", "userId": "u", "event": "E\\udfff"}}'
    resp = client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert redis.xlen(keyspace.partition(0).stream) == 0
    ok = f'{{"k": "{write_key}", "events": [{{"type": "page", "title": "Grüße \\u00fc"}}]}}'
    assert client.post("/collect", data=ok).status_code == 204


def test_non_ascii_write_key_is_unknown(client, redis):
    """A write key that is no ASCII token belongs to no site: 401, not a crash."""
    body = '{"k": "wk_\u00e9\u00e9", "events": [{"type": "page"}]}'
    resp = client.post("/collect", data=body)
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"
