"""The worker's rows handed to the live lane before their flush."""

from __future__ import annotations

import threading

from dmp.ingest.livefeed import LiveFeed, Unflushed


def test_rows_are_kept_until_their_buffer_is_done():
    feed, unflushed = LiveFeed(), Unflushed()
    a, b = feed.number(), feed.number()
    assert a != b
    feed.taken(a, [("e1",), ("e2",)])
    feed.taken(b, [("e3",)])
    assert feed.woken.is_set()
    assert unflushed.take(*feed.drain()) == [("e1",), ("e2",), ("e3",)]
    assert feed.drain() == ([], [])  # each hand-over once
    feed.taken(a, [("e4",)])
    feed.done(a)  # flushed: in files now
    assert unflushed.take(*feed.drain()) == [("e4",)]  # handed over now, and let go
    assert unflushed.rows() == [("e3",)] and len(unflushed) == 1


def test_a_buffer_never_done_is_let_go(monkeypatch):
    """A worker that lost its lease drops its buffer unflushed: its rows come back through
    the stream; the lane's copy goes after keep_seconds."""
    clock = [1000.0]
    monkeypatch.setattr("dmp.ingest.livefeed.time.monotonic", lambda: clock[0])
    unflushed = Unflushed(keep_seconds=60)
    unflushed.take([(1, [("old",)])], [])
    clock[0] += 30
    unflushed.take([(2, [("new",)]), (1, [("later",)])], [])
    assert unflushed.rows() == [("old",), ("later",), ("new",)]
    clock[0] += 31  # buffer 1 handed over first 61 s ago
    unflushed.take([], [])
    assert unflushed.rows() == [("new",)]


def test_hand_overs_from_threads_are_all_drained():
    feed, unflushed = LiveFeed(), Unflushed()
    numbers = [feed.number() for _ in range(4)]

    def work(n: int) -> None:
        for i in range(500):
            feed.taken(n, [(n, i)])

    threads = [threading.Thread(target=work, args=(n,)) for n in numbers]
    for t in threads:
        t.start()
    got = []
    while any(t.is_alive() for t in threads):
        got += unflushed.take(*feed.drain())
    got += unflushed.take(*feed.drain())
    assert sorted(got) == sorted((n, i) for n in numbers for i in range(500))
