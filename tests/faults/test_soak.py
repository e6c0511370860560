"""The soak of ``bench/soak.py`` at 100,000 events, through a real ``dmp serve``.

50,000 pixel hits and 50,000 Segment events (raw batches with the site's server key or its
public write key, and the real segment-analytics-python client) from four client
processes, with 5 % of them sent again under the same event id. Once the worker has
drained, what dmp holds must equal what was sent exactly; the test asserts counts, never
timings.
"""

from __future__ import annotations

from pathlib import Path

from bench.soak import Plan, print_report, run_soak


def test_a_soak_of_100000_events_stores_each_once_and_counts_each_replay(tmp_path: Path):
    """Stored plus aggregate equal the distinct events sent, duplicates equal the replays
    sent, every request is counted ok, no answer is a 5xx and the server is still up."""
    report = run_soak(Plan(pixel=50_000, api=50_000, clients=4), tmp_path)
    print_report(report)  # the table, shown when the test fails
    sent = report["sent"]
    rows = {row["name"]: (row["expected"], row["observed"]) for row in report["rows"]}
    # The mix holds every kind of traffic the equalities are about.
    assert sent["pixel_distinct"] == 50_000 and sent["api_distinct"] == 50_000
    assert sent["pixel_aggregate"] > 5_000 and sent["api_aggregate"] > 5_000
    assert sent["pixel_replays"] > 1_000 and sent["raw_replays"] > 500
    assert sent["library_messages"] > 5_000 and sent["library_replays"] > 100
    assert sent["raw_batches_server"] > 100 and sent["raw_batches_public"] > 50
    assert sent["pixel_withdrawals"] > 50
    replays = sent["pixel_replays"] + sent["raw_replays"] + sent["library_replays"]
    assert rows["stored + aggregate = distinct sent"] == (100_000, 100_000)
    assert rows["duplicates = replays sent"] == (replays, replays)
    assert rows["answers 5xx"] == (0, 0) and rows["requests failed"] == (0, 0)
    assert rows["server up (/healthz 200)"] == (1, 1)
    mismatches = {name: pair for name, pair in rows.items() if pair[0] != pair[1]}
    assert mismatches == {}, report["failures"]
    assert report["ok"]
