"""The lookup sets on a Redis Cluster of three masters: a segment run's moves and its
rewrite keep both directions in step (issue 17)."""

from __future__ import annotations

import polars as pl

from dmp.membership import lookupsets
from dmp.storage import keyspace

PIDS = [f"{n:016x}" for n in range(1, 7)]


def _sets(r) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Return each segment's members and each person's segments as the cluster holds them."""
    segments = {
        keyspace.segment_id_of(k): r.smembers(k)
        for k in r.scan_iter(match=keyspace.segment_pattern("members"))
    }
    persons = {pid: s for pid in PIDS if (s := r.smembers(keyspace.person(pid, "segments")))}
    return segments, persons


def test_moves_on_the_cluster_change_both_directions_and_note_the_persons(cluster):
    """move_sets on the cluster: persons enter and leave segments in the segments' sets
    and their own, and the live lane's note of them moves only on."""
    lookupsets.move_sets(cluster, {p: {"a", "b"} for p in PIDS[:4]}, {"a", "b"}, noted_at=5)
    moved = lookupsets.move_sets(cluster, {PIDS[0]: {"b"}, PIDS[1]: set()}, {"a", "b"}, 3)
    assert moved == 3
    segments, persons = _sets(cluster)
    assert segments == {"a": set(PIDS[2:4]), "b": {PIDS[0], *PIDS[2:4]}}
    assert persons == {PIDS[0]: {"b"}, PIDS[2]: {"a", "b"}, PIDS[3]: {"a", "b"}}
    assert cluster.zscore(keyspace.SEGMENTS_LIVE, PIDS[0]) == 5


def test_a_rewrite_on_the_cluster_replaces_every_set(cluster):
    """The rewrite from a run's snapshot on the cluster: each segment's and person's set
    is what the snapshot says, sets of no one's are gone, no temporary key is left."""
    lookupsets.move_sets(cluster, {p: {"old", "a"} for p in PIDS}, {"old", "a"})
    rows = [("a", PIDS[0]), ("a", PIDS[1]), ("b", PIDS[1]), ("c", PIDS[5])]
    members = pl.DataFrame(rows, schema=lookupsets.MEMBER_SCHEMA, orient="row")
    lookupsets._rewrite(cluster, members)
    segments, persons = _sets(cluster)
    assert segments == {"a": {PIDS[0], PIDS[1]}, "b": {PIDS[1]}, "c": {PIDS[5]}}
    assert persons == {PIDS[0]: {"a"}, PIDS[1]: {"a", "b"}, PIDS[5]: {"c"}}
    assert cluster.keys("*-new") == [] and cluster.keys("*-rewrite") == []
