"""Request bodies shared by the tag and the Segment API."""

from __future__ import annotations

import pytest

from dmp import keyspace


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
    assert redis.xlen(keyspace.STREAM) == 0
