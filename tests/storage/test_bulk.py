"""dmp.storage.bulk: raw-RESP batches read back from hiredis, in order, errors apart."""

from __future__ import annotations

import pytest
import redis as redis_lib

from dmp.storage.bulk import Bulk


def test_replies_come_back_in_order_undecoded(redis: redis_lib.Redis) -> None:
    bulk = Bulk()
    bulk.add("SET", "k", "v")
    bulk.add("INCRBY", "n", 5)
    bulk.add("GET", "k")
    bulk.add("MGET", "k", "missing")
    bulk.add("HSET", "h", "a", "1", "b", "2")
    assert bulk.execute(redis) == [b"OK", 5, b"v", [b"v", None], 2]
    assert len(bulk) == 0  # sent and forgotten


def test_many_large_replies_span_many_socket_reads(redis: redis_lib.Redis) -> None:
    value = b"x" * 100_000
    bulk = Bulk()
    for i in range(40):
        bulk.add("SET", f"big:{i}", value)
    for i in range(40):
        bulk.add("GET", f"big:{i}")
    replies = bulk.execute(redis)
    assert replies[:40] == [b"OK"] * 40
    assert replies[40:] == [value] * 40


def test_an_error_reply_raises_after_every_reply_is_read(redis: redis_lib.Redis) -> None:
    redis.set("text", "not a number")
    bulk = Bulk()
    bulk.add("INCR", "text")  # fails
    bulk.add("SET", "after", "1")  # still applied
    with pytest.raises(redis_lib.ResponseError, match="not an integer"):
        bulk.execute(redis)
    assert redis.get("after") == "1"
    # The connection went back to the pool with nothing unread: the next reply is ours.
    again = Bulk()
    again.add("GET", "after")
    assert again.execute(redis) == [b"1"]


def test_send_lets_the_caller_work_before_reading(redis: redis_lib.Redis) -> None:
    bulk = Bulk()
    bulk.add("RPUSH", "l", "a", "b")
    inflight = bulk.send(redis)
    assert redis.ping()  # another connection from the pool meanwhile
    assert inflight.wait() == [2]
    assert inflight.wait() == []  # read once


def test_an_empty_bulk_sends_nothing(redis: redis_lib.Redis) -> None:
    assert Bulk().execute(redis) == []


def test_a_connection_lost_mid_bulk_is_a_redis_connection_error(own_redis) -> None:
    """A Redis killed with replies outstanding raises redis.ConnectionError, not a raw
    socket error (the worker told a dead Redis from a failing events folder by this)."""
    client = redis_lib.Redis.from_url(own_redis.url)
    bulk = Bulk()
    bulk.add("DEBUG", "SLEEP", "0.5")
    for i in range(2000):  # left unread in the server's socket: its close is a reset
        bulk.add("SET", f"k{i}", "x" * 1000)
    inflight = bulk.send(client)
    own_redis.kill(written=False)  # now, with the replies outstanding
    with pytest.raises(redis_lib.ConnectionError):
        inflight.wait()
