"""A build's preview sample and the estimates made from it: within their stated interval
of the truth, exact for a sample of everyone, one sample per build, written once."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from dmp.config import Config, load_config
from dmp.matrix import snapshots
from dmp.matrix.sources import last_merge_id
from dmp.membership import estimates, previewsample
from dmp.membership.plan import plan
from dmp.membership.preview import preview
from dmp.storage import redisserver
from dmp.storage.parquetfiles import tmp_name, write_parquet_files
from segments.definition import load_definitions
from tests.factories import NOW, apply_segments

PERSONS = 20_000
TIERS = ("unknown", "low", "medium", "high")


@pytest.fixture(autouse=True)
def _small_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Samples of about 2,000 persons from matrices of any size (kept apart per test)."""
    monkeypatch.setattr(previewsample, "EXACT_BELOW", 0)
    monkeypatch.setattr(previewsample, "TARGET", 2_000)
    previewsample.forget_samples()


def _matrix(persons: int = PERSONS, shift: int = 0) -> pl.DataFrame:
    """Rows whose truth is known: tier by i % 4, score i % 100 (+ shift), email channel
    for every third person."""
    i = pl.int_range(0, persons, eager=True)
    return pl.DataFrame(
        {
            "person_id": [f"p{n:08d}" for n in range(persons)],
            "email": [f"p{n}@acme.de" for n in range(persons)],
            "tier": (i % 4).replace_strict(range(4), TIERS, return_dtype=pl.Utf8),
            "stage": pl.Series(["lead", "mql", "sql"] * (persons // 3 + 1))[:persons],
            "score": ((i + shift) % 100).cast(pl.Float64),
            "channels": [["email", "web"] if n % 3 == 0 else ["web"] for n in range(persons)],
            "top_interest": ["crm"] * persons,
            "interests": [[{"topic": "crm", "weight": 0.5}]] * persons,
        }
    )


def _build(r, config: Config, rows: pl.DataFrame) -> tuple[Path, dict]:
    """Write a snapshot of these rows (no touchpoints) as the latest build."""
    empty = pl.DataFrame({"person_id": []}, schema={"person_id": pl.Utf8})
    manifest = {"as_of": NOW, "files": [], "last_merge": last_merge_id(r)}
    snapshots.write_snapshot(config, rows, NOW, {}, empty, empty, manifest)
    return snapshots.latest_build(config)


def _definition(where: str, sid: str = "x"):
    (found,) = load_definitions(f"id: {sid}\nwhere: {where}")
    return found


def test_estimates_fall_within_their_interval_of_the_truth(redis, config) -> None:
    """Over a matrix whose counts are known, the estimated size lies within its 95%
    interval for nearly every threshold (and never far out); shares and breakdowns
    scale, the members shown are real members."""
    rows = _matrix()
    snapshot, manifest = _build(redis, config, rows)
    sample = previewsample.load_sample(redis, config, snapshot, manifest)
    assert 1_500 < sample.size < 2_500 and sample.persons == PERSONS
    inside, margins = 0, []
    for cut in range(0, 100, 5):
        truth = rows.filter((pl.col("score") >= cut) & (pl.col("tier") != "unknown")).height
        where = f"{{all: [{{score: {{gte: {cut}}}}}, {{tier: {{gte: low}}}}]}}"
        found = estimates.estimate_preview(sample, _definition(where))
        assert found["estimate"] and found["low"] <= found["members"] <= found["high"]
        inside += found["low"] <= truth <= found["high"]
        margins.append(found["margin"])
        assert abs(found["members"] - truth) <= 2 * found["margin"] + 1, cut
        assert abs(found["share"] - truth / PERSONS) < 0.05
        members = set(rows.filter(pl.col("score") >= cut)["person_id"])
        assert {m["person_id"] for m in found["sample"]} <= members
    assert inside >= 17  # a 95% interval: about 19 of 20, allowing for chance
    assert 0 < max(margins) < PERSONS * 0.05


def test_breakdowns_and_conditions_are_scaled(redis, config) -> None:
    """The estimated breakdown by tier and the count meeting each condition are near the
    truth (tiers are a quarter each; a third of persons has the email channel)."""
    rows = _matrix()
    sample = previewsample.load_sample(redis, config, *_build(redis, config, rows))
    found = estimates.estimate_preview(sample, _definition("{any: [{channel: email}]}"))
    truth = rows.filter(pl.col("channels").list.contains("email"))
    assert abs(found["conditions"][0]["members_meeting"] - truth.height) < 0.1 * truth.height
    for tier in TIERS:
        expected = truth.filter(pl.col("tier") == tier).height
        assert abs(found["by_tier"][tier] - expected) < 0.2 * expected, tier


def test_a_sample_of_everyone_is_exact(redis, config, monkeypatch) -> None:
    """A matrix no larger than the sample is sampled whole: the estimate has no margin
    and equals the core preview; under EXACT_BELOW it is called small (no sample)."""
    monkeypatch.setattr(previewsample, "TARGET", 5_000)
    rows = _matrix(3_000)
    snapshot, manifest = _build(redis, config, rows)
    sample = previewsample.load_sample(redis, config, snapshot, manifest)
    definition = _definition("{all: [{score: {gte: 40}}, {channel: email}]}")
    found, exact = (
        estimates.estimate_preview(sample, definition),
        preview(redis, config, definition),
    )
    assert sample.size == 3_000 and found["margin"] == 0
    for key in ("members", "share", "by_tier", "by_stage", "by_channel", "conditions", "sample"):
        assert found[key] == exact[key], key
    monkeypatch.setattr(previewsample, "EXACT_BELOW", 3_000)
    assert previewsample.is_small(snapshot)


def test_the_plan_is_estimated_against_the_stored_version(redis, config) -> None:
    """The estimated plan (who would enter and leave against the version stored now)
    lies near the exact plan, with real persons who would enter and leave."""
    apply_segments(redis, "id: hot\nname: Hot\nwhere: {score: {gte: 50}}")
    rows = _matrix()
    sample = previewsample.load_sample(redis, config, *_build(redis, config, rows))
    definition = _definition("{all: [{score: {gte: 30}}, {channel: email}]}", "hot")
    found = estimates.estimate_plan(redis, sample, definition)
    (exact,) = plan(redis, config, [definition])["segments"]
    for key, margin in (("added", "added_margin"), ("removed", "removed_margin")):
        assert abs(found[key] - exact[key]) <= 2 * found[margin] + 1, key
    assert abs(found["members_now"] - exact["members_now"]) < 0.1 * exact["members_now"]
    scores = dict(rows.select("person_id", "score").iter_rows())
    assert found["sample_added"] and all(
        30 <= scores[p["person_id"]] < 50 for p in found["sample_added"]
    )
    assert all(scores[p["person_id"]] >= 50 for p in found["sample_removed"])


def test_each_build_has_its_own_sample(redis, config) -> None:
    """A new build gets a new sample beside its snapshot (the old one's is not reused)."""
    first = previewsample.load_sample(redis, config, *_build(redis, config, _matrix()))
    snapshot, manifest = _build(redis, config, _matrix(PERSONS // 2, shift=50))
    second = previewsample.load_sample(redis, config, snapshot, manifest)
    assert first.build != second.build == snapshot.name
    assert (first.persons, second.persons) == (PERSONS, PERSONS // 2)
    assert all(p.exists() for p in previewsample.sample_paths(snapshot))
    assert set(second.rows["person_id"]) <= {f"p{n:08d}" for n in range(PERSONS // 2)}
    where = _definition("{score: {gte: 90}}")
    a, b = (estimates.estimate_preview(s, where)["members"] for s in (first, second))
    assert abs(a - PERSONS / 10) < PERSONS / 40 and abs(b - PERSONS / 20) < PERSONS / 80


def _write_in_child(url: str, data_dir: str, queue) -> None:
    """Write the latest build's sample in another process; report whether it wrote."""
    config = load_config({"redis_url": url, "data_dir": data_dir}, env={})
    previewsample.EXACT_BELOW, previewsample.TARGET = 0, 2_000
    r = redisserver.connect(url)
    queue.put(previewsample.write_sample(r, config, *snapshots.latest_build(config)))


def test_the_sample_is_written_once(redis, redis_url, config) -> None:
    """Threads and another process asking for the same sample at once: one writes it, the
    others wait and read it; a temp file left by a crashed writer is never read."""
    snapshot, manifest = _build(redis, config, _matrix())
    rows_path, touch_path = previewsample.sample_paths(snapshot)
    tmp_name(rows_path).write_bytes(b"half a file")  # a writer died here once
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_write_in_child, args=(redis_url, str(config.data_dir), queue))
    wrote: list[bool] = []
    threads = [
        threading.Thread(
            target=lambda: wrote.append(
                previewsample.write_sample(redis, config, snapshot, manifest)
            )
        )
        for _ in range(3)
    ]
    child.start()
    time.sleep(0.5)  # the child is importing: the threads may come first or after
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    child.join(60)
    wrote.append(queue.get(timeout=5))
    assert sorted(wrote) == [False, False, False, True]
    sample = previewsample.load_sample(redis, config, snapshot, manifest)
    assert sample.size == pl.read_parquet(rows_path).height > 0
    assert not tmp_name(rows_path).exists() and touch_path.exists()


def test_ready_sample_reads_on_a_thread(redis, config) -> None:
    """The first ask starts reading and answers None at once; then the sample is there."""
    snapshot, manifest = _build(redis, config, _matrix())
    assert previewsample.ready_sample(redis, config, snapshot, manifest) is None
    previewsample.wait_for_samples(60)
    found = previewsample.ready_sample(redis, config, snapshot, manifest)
    assert found is not None and found.build == snapshot.name


def test_a_rewritten_sample_is_read_again(redis, config) -> None:
    """A compaction that erases persons rewrites the sample's files: the process reads
    them again instead of showing the erased from memory."""
    snapshot, manifest = _build(redis, config, _matrix())
    first = previewsample.load_sample(redis, config, snapshot, manifest)
    gone = first.rows["person_id"][0]
    rows_path, _ = previewsample.sample_paths(snapshot)
    time.sleep(0.01)  # a new mtime even on coarse clocks
    kept = first.rows.filter(pl.col("person_id") != gone)
    write_parquet_files([kept.to_arrow()], [rows_path])
    again = previewsample.load_sample(redis, config, snapshot, manifest)
    assert again.size == first.size - 1 and gone not in set(again.rows["person_id"])
