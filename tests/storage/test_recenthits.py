"""Refused and set-aside hits per minute: which counters feed them, and the last hour."""

from __future__ import annotations

from dmp.storage import keyspace, metrics, recenthits

NOW = 1_790_000_000.0  # seconds: 2026-09-21T14:13:20Z


def _add(redis, fields: dict[str, int], now: float) -> None:
    with redis.pipeline(transaction=False) as pipe:
        recenthits.queue_counts(pipe.execute_command, fields, now)
        pipe.execute()


def test_refusals_and_lost_cookies_feed_the_minute_but_accepted_hits_do_not():
    """Every dmp_hits_total outcome but ok, by collector, and the tag's lost cookies (of
    every site, as one reason) count; other counters and malformed fields do not."""
    counters = {
        metrics.hits_counter("tag", "origin_not_allowed"): 3,
        metrics.hits_counter("pixel", "unknown_key"): 2,
        metrics.hits_counter("api", "bad_input"): 1,
        metrics.hits_counter("newsletter", "error"): 1,
        metrics.hits_counter("pixel", "ok"): 50,
        metrics.counter("dmp_cookie_not_returned_total", site="a"): 4,
        metrics.counter("dmp_cookie_not_returned_total", site="b"): 1,
        metrics.counter("dmp_spool_dropped_total"): 9,
        metrics.counter("dmp_hits_total", outcome="bad_input"): 7,  # no collector
        'dmp_hits_total{collector="tag",outcome=': 5,  # malformed
        metrics.hits_counter("tag", "rate_limited"): 0,
    }
    assert recenthits.from_counters(counters) == {
        "tag:origin_not_allowed": 3,
        "pixel:unknown_key": 2,
        "api:bad_input": 1,
        "newsletter:error": 1,
        "tag:cookie_not_returned": 5,
    }


def test_a_minute_expires_after_two_hours_and_nothing_is_written_without_refusals(redis):
    """A minute's hash gets a TTL past the hour it is read for; no fields, no key."""
    _add(redis, {}, NOW)
    assert redis.keys(keyspace.recent_hits("*")) == []
    _add(redis, {"tag:origin_not_allowed": 2}, NOW)
    key = keyspace.recent_hits(recenthits.minute_of(NOW))
    assert redis.hgetall(key) == {"tag:origin_not_allowed": "2"}
    assert recenthits.WINDOW_MINUTES * 60 < redis.ttl(key) <= recenthits.KEEP_SECONDS


def test_last_hour_sums_the_sixty_newest_minutes_by_reason_and_collector(redis):
    """Minutes 0 to 59 back count; the 60th back and later do not; unreadable fields are
    skipped."""
    _add(redis, {"tag:origin_not_allowed": 2, "pixel:unknown_key": 1}, NOW)
    _add(redis, {"tag:origin_not_allowed": 1, "pixel:bot": 4}, NOW - 59 * 60)
    _add(redis, {"tag:origin_not_allowed": 100}, NOW - 60 * 60)
    _add(redis, {"tag:origin_not_allowed": 100}, NOW + 60)  # the next minute: not yet
    key = keyspace.recent_hits(recenthits.minute_of(NOW))
    redis.hset(key, mapping={"nocolon": 5, "tag:no_consent": "many", ":x": 1})
    found = recenthits.last_hour(redis, NOW)
    assert found.by_reason == {"bot": 4, "origin_not_allowed": 3, "unknown_key": 1}
    assert found.by_collector == {
        "pixel": {"bot": 4, "unknown_key": 1},
        "tag": {"origin_not_allowed": 3},
    }
    assert found.total == 8
    assert recenthits.last_hour(redis, NOW + 2 * 3600) == recenthits.RecentHits()


def test_commands_go_into_a_transaction_with_the_totals(redis):
    """The commands for a Segment batch's counters join its MULTI as they are."""
    counters = {metrics.hits_counter("api", "rate_limited"): 2}
    with redis.pipeline(transaction=True) as pipe:
        for field, amount in counters.items():
            pipe.hincrby(keyspace.METRICS, field, amount)
        for command in recenthits.commands(counters, NOW):
            pipe.execute_command(*command)
        pipe.execute()
    assert recenthits.last_hour(redis, NOW).by_collector == {"api": {"rate_limited": 2}}
