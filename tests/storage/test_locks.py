"""Token-fenced Redis locks: one holder at a time, only the holder renews or releases,
and a holder whose lock was taken over notices."""

from __future__ import annotations

import time

import pytest

from dmp.storage import locks

KEY = "dmp:test:lock"


def test_one_holder_at_a_time_and_only_it_releases(redis) -> None:
    """A second lease cannot take a held key; a stranger's release leaves it be."""
    first, second = locks.Lease(redis, KEY, 30), locks.Lease(redis, KEY, 30)
    assert first.take() and not second.take()
    second.release()  # not its lock: nothing happens
    assert first.held() and first.take()  # taking again renews
    first.release()
    assert not first.held() and second.take()


def test_a_dead_holders_lease_expires(redis) -> None:
    """Not renewed, a lease is free again after its time."""
    assert locks.Lease(redis, KEY, 0.2).take()
    time.sleep(0.3)
    assert locks.Lease(redis, KEY, 30).take()


def test_hold_refuses_while_another_holds(redis) -> None:
    """hold() raises Busy with its message once the wait is over."""
    with locks.hold(redis, KEY), pytest.raises(locks.Busy, match="busy now"):
        with locks.hold(redis, KEY, 0.3, "busy now"):
            pytest.fail("a second holder entered the block")
    assert redis.get(KEY) is None  # released at the end of the block


def test_a_holder_notices_when_its_lock_was_taken_over(redis, monkeypatch) -> None:
    """Its heartbeat finds another token under the key: the lease says it is lost, and
    the block's end leaves the new holder's lock alone."""
    monkeypatch.setattr(locks, "HOLD_SECONDS", 0.6)
    with locks.hold(redis, KEY) as lease:
        redis.set(KEY, "someone-else")  # as if we had stalled past the expiry
        deadline = time.monotonic() + 5
        while not lease.lost.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.lost.is_set() and not lease.held()
    assert redis.get(KEY) == "someone-else"
