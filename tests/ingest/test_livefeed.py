"""The worker's rows handed to the live lane before their flush."""

from __future__ import annotations

import threading

import polars as pl
import pyarrow as pa

from dmp.ingest.eventlog import rows_table
from dmp.ingest.livefeed import LiveFeed, Unflushed
from dmp.ingest.worker import Worker
from dmp.matrix import sources
from tests.factories import make_hit, send_hits
from tests.served import wait_for


def _table(rows: list[tuple]) -> pa.Table:
    """A stand-in for the event rows' table: each row's first value."""
    return pa.table({"e": [row[0] for row in rows]})


def _values(unflushed: Unflushed) -> list:
    table = unflushed.table()
    return [] if table is None else table.column("e").to_pylist()


def test_rows_are_kept_until_their_buffer_is_done():
    feed, unflushed = LiveFeed(), Unflushed(to_table=_table)
    a, b = feed.number(), feed.number()
    assert a != b
    feed.taken(a, [("e1",), ("e2",)])
    feed.taken(b, [("e3",)])
    assert feed.woken.is_set()
    assert unflushed.take(*feed.drain()) == ([("e1",), ("e2",), ("e3",)], set())
    assert feed.drain() == ([], [])  # each hand-over once
    feed.taken(a, [("e4",)])
    feed.done(a, ["dt=2026-11-30/part-a.parquet"])  # flushed: in files now
    # handed over now, and let go; the lane had every row of its file
    assert unflushed.take(*feed.drain()) == ([("e4",)], {"dt=2026-11-30/part-a.parquet"})
    assert _values(unflushed) == ["e3"] and len(unflushed) == 1
    feed.done(b, [])  # its flush failed: its rows come back through the stream
    assert unflushed.take(*feed.drain()) == ([], set()) and unflushed.table() is None


def test_a_buffer_never_done_is_let_go(monkeypatch):
    """A worker that lost its lease drops its buffer unflushed: its rows come back through
    the stream; the lane's copy goes after keep_seconds."""
    clock = [1000.0]
    monkeypatch.setattr("dmp.ingest.livefeed.time.monotonic", lambda: clock[0])
    unflushed = Unflushed(keep_seconds=60, to_table=_table)
    unflushed.take([(1, [("old",)])], [])
    assert _values(unflushed) == ["old"]
    clock[0] += 30
    unflushed.take([(2, [("new",)]), (1, [("later",)])], [])
    assert _values(unflushed) == ["old", "later", "new"]
    clock[0] += 31  # buffer 1 handed over first 61 s ago
    unflushed.take([], [])
    assert _values(unflushed) == ["new"]


def test_each_row_is_made_a_table_row_once_however_often_the_lane_looks():
    """The lane asks for the rows not flushed yet on every tick (after every batch of the
    worker's): converting all of them each time cost a pixel hit about 40 µs of the
    worker's CPU at 3,500 hits/s (2 s of rows, dozens of ticks a second)."""
    converted: list[int] = []

    def counting(rows: list[tuple]) -> pa.Table:
        converted.append(len(rows))
        return _table(rows)

    feed, unflushed = LiveFeed(), Unflushed(to_table=counting)
    a, b = feed.number(), feed.number()
    for tick in range(5):
        feed.taken(a, [(f"a{tick}-{i}",) for i in range(3)])
        if tick % 2:
            feed.taken(b, [(f"b{tick}",)])
        unflushed.take(*feed.drain())
        assert len(_values(unflushed)) == len(unflushed) == 3 * (tick + 1) + (tick + 1) // 2
        assert unflushed.table() is not None  # asked twice: nothing converted again
    assert sum(converted) == 17  # each row once
    assert _values(unflushed)[:4] == ["a0-0", "a0-1", "a0-2", "a1-0"]  # buffer a's first
    feed.done(a, ["dt=2026-11-30/part-a.parquet"])
    unflushed.take(*feed.drain())
    assert _values(unflushed) == ["b1", "b3"] and sum(converted) == 17


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
        got += unflushed.take(*feed.drain())[0]
    got += unflushed.take(*feed.drain())[0]
    assert sorted(got) == sorted((n, i) for n in numbers for i in range(500))


def test_the_worker_hands_over_every_row_of_a_flush_and_names_its_files(redis, config):
    """Each batch's rows go one batch later (their profile writes first), the rest at the
    flush; the flush names its files: the lane had every row of them."""
    feed = LiveFeed()
    worker = Worker(redis, config, feed=feed)
    assert worker.acquire_lease()
    worker.start()
    send_hits(redis, *(make_hit(uid=f"c-{i}", url=f"https://acme.de/{i}") for i in range(3)))
    wait_for(lambda: worker.step(), 10, "the batch")
    taken, done = feed.drain()
    assert taken == [] and done == []  # one batch behind
    worker.flush()
    worker.release_lease()
    taken, done = feed.drain()
    ((number, rows),) = taken
    ((flushed, files),) = done
    assert flushed == number and len(rows) == 3
    assert files == sources.event_files(config.events_dir)
    stored = pl.read_parquet(config.events_dir / files[0])
    assert sorted(stored["event_id"]) == sorted(rows_table(rows).column("event_id").to_pylist())
