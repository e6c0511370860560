"""Refused and set-aside hits reach the minute buckets with the totals: from the
collectors' appender (summed, not per hit) and from the ingest worker's flush."""

from __future__ import annotations

import time

from dmp.ingest.appender import Appender
from dmp.storage import keyspace, metrics, recenthits
from tests.factories import GOOGLEBOT, make_hit, send_hits


def _hincrby_calls(redis) -> int:
    stats = redis.info("commandstats").get("cmdstat_hincrby", {})
    return int(stats.get("calls", 0))


def test_the_appender_sends_refusals_summed_with_the_totals(redis):
    """Five hundred refused hits counted one by one cost a few HINCRBYs, not one each, and
    show in the last hour beside the total."""
    appender = Appender(redis)
    try:
        redis.config_resetstat()
        field = metrics.hits_counter("tag", "origin_not_allowed")
        for _ in range(500):
            appender.count({field: 1})
        appender.count({metrics.hits_counter("tag", "ok"): 7})
        appender.sync()
    finally:
        appender.close()
    assert metrics.read_counter(redis, field) == 500
    assert recenthits.last_hour(redis, time.time()).by_collector == {
        "tag": {"origin_not_allowed": 500}
    }
    assert _hincrby_calls(redis) < 20  # one send a second: each holds one per field


def test_a_segment_batch_counts_its_refusals_in_its_transaction(redis):
    """append_atomic (a Segment batch) adds the refusals among its counters too."""
    appender = Appender(redis)
    try:
        hit = make_hit(source="api", type="track", event="Signed Up")
        assert appender.append_atomic([hit], {metrics.hits_counter("api", "bad_input"): 2})
    finally:
        appender.close()
    assert recenthits.last_hour(redis).by_reason == {"bad_input": 2}


def test_a_pixel_hit_with_an_unknown_key_is_counted_in_the_last_hour(client, redis):
    """A real refusal at the door: the pixel's unknown key shows in the last hour."""
    resp = client.get("/p.gif?k=wk_nobody&consent=analytics")
    assert resp.status_code == 200
    assert recenthits.last_hour(redis).by_collector == {"pixel": {"unknown_key": 1}}


def test_the_worker_counts_bots_and_unconsented_hits_by_collector(redis, drain):
    """Bots (stored flagged) and hits without analytics consent (only in aggregate) are
    counted in the flush that counts their totals, by the collector they came through;
    consented hits are not."""
    send_hits(
        redis,
        make_hit(uid="c1"),
        make_hit(uid="c2", user_agent=GOOGLEBOT),
        make_hit(uid="", consent={}),
        make_hit(uid="", consent={}, source="tag"),
        make_hit(uid="", consent={}, source="tag"),
    )
    drain()
    assert metrics.read_counter(redis, metrics.counter("dmp_bots_total")) == 1
    assert recenthits.last_hour(redis).by_collector == {
        "pixel": {"bot": 1, "no_consent": 1},
        "tag": {"no_consent": 2},
    }
    # /metrics has them by outcome too: what the worker set aside, by collector and reason.
    set_aside = {
        (labels["collector"], labels["reason"]): int(value)
        for field, value in redis.hgetall(keyspace.partition(0).metrics).items()
        if (parsed := metrics.parse_counter(field)) and parsed[0] == "dmp_hits_set_aside_total"
        for labels in [parsed[1]]
    }
    assert set_aside == {("pixel", "bot"): 1, ("pixel", "no_consent"): 1, ("tag", "no_consent"): 2}
