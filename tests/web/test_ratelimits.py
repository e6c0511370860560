"""Rate limits on the collect endpoints: per client IP and per write key, per process; a
refused pixel hit still gets its GIF (and is counted), a refused call a 429 with
Retry-After."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from collectors.pixel import GIF
from dmp.app import create_app
from dmp.web.ratelimits import RateLimiter, RateLimits
from tests.factories import read_metric, scrape, stream_hits


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    """A limiter of 2/s takes a burst of 2, then one more each half second."""
    now = [100.0]
    limiter = RateLimiter(2.0, clock=lambda: now[0])
    assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    assert limiter.wait("b") == 0.0  # another key has its own bucket
    now[0] += 0.5
    assert limiter.wait("a") == 0.0 and limiter.wait("a") > 0


def test_a_rate_below_one_still_lets_requests_through() -> None:
    """A limit of 0.5/s lets one request through every two seconds (a bucket holds at
    least one request)."""
    now = [0.0]
    limiter = RateLimiter(0.5, clock=lambda: now[0])
    assert limiter.wait("a") == 0.0 and limiter.wait("a") > 0
    now[0] += 2.0
    assert limiter.wait("a") == 0.0


def test_a_refused_client_does_not_use_up_its_sites_budget() -> None:
    """Requests the per-IP limit refuses take nothing from the write key's bucket."""
    limits = RateLimits(per_ip=5.0, per_key=50.0)
    refused = sum(limits.wait("10.0.0.1", "site") > 0 for _ in range(1000))
    assert refused == 995
    assert limits.wait("10.0.0.2", "site") == 0.0  # another visitor of the same site


def test_ipv6_clients_share_their_64_bits_of_network() -> None:
    """One IPv6 client can take any address of its /64: those addresses share a bucket,
    another network has its own."""
    limits = RateLimits(per_ip=1.0, per_key=0.0)
    assert limits.wait("2001:db8:1:2::1", "site") == 0.0
    assert limits.wait("2001:db8:1:2:ffff::9", "site") > 0
    assert limits.wait("2001:db8:1:3::1", "site") == 0.0
    assert limits.wait("::ffff:192.0.2.1", "site") == 0.0  # IPv4 mapped: its own address


def test_a_flood_of_keys_does_not_grow_memory() -> None:
    """Past its size the limiter forgets old buckets instead of growing."""
    limiter = RateLimiter(1.0, max_keys=100)
    for i in range(1000):
        limiter.wait(f"ip-{i}")
    assert len(limiter) <= 100


def test_an_unset_limit_limits_nothing() -> None:
    """A rate of 0 turns the limit off."""
    limiter = RateLimiter(0.0)
    assert all(limiter.wait("a") == 0.0 for _ in range(10_000))


@pytest.fixture
def limited(config):
    app = create_app(replace(config, rate_limit_ip=2.0))
    app.testing = True
    yield app
    app.extensions["dmp"].appender.close()


def test_the_pixel_answers_a_refused_hit_with_the_gif_and_counts_it(limited, redis, write_key):
    """Past the per-IP limit the pixel still answers the GIF but stores nothing more."""
    client = limited.test_client()
    query = {"k": write_key, "url": "https://acme.de/", "consent": "analytics"}
    answers = [client.get("/p.gif", query_string=query) for _ in range(5)]
    assert all(a.status_code == 200 and a.data == GIF for a in answers)
    limited.extensions["dmp"].appender.sync()  # the pixel does not wait for Redis
    text = scrape(client)
    assert read_metric(text, "dmp_hits_total", collector="pixel", outcome="rate_limited") == 3
    assert len(stream_hits(redis)) == 2


def test_the_tag_and_the_segment_api_answer_429_with_retry_after(limited, write_key):
    """Past the limit /collect and /v1/* answer 429 problem+json with Retry-After."""
    client = limited.test_client()
    beacon = json.dumps({"k": write_key, "consent": ["analytics"], "events": [{"type": "page"}]})
    headers = {"Content-Type": "text/plain", "Origin": "https://www.acme.de"}
    tag = [client.post("/collect", data=beacon, headers=headers).status_code for _ in range(3)]
    assert tag == [204, 204, 429]
    refused = client.post("/v1/track", json={"userId": "u", "event": "E"}, auth=(write_key, ""))
    assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1


def test_other_clients_are_not_held_up(limited, write_key):
    """One client IP at its limit does not limit another."""
    client = limited.test_client()
    query = {"k": write_key, "url": "https://acme.de/", "consent": "analytics"}
    for _ in range(3):
        client.get("/p.gif", query_string=query, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    body, addr = {"userId": "u", "event": "E"}, {"REMOTE_ADDR": "10.0.0.2"}
    other = client.post("/v1/track", json=body, auth=(write_key, ""), environ_base=addr)
    assert other.status_code == 200
