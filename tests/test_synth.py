"""`dmp synth`: deterministic demo data that climbs tiers and stages through the real paths."""

from __future__ import annotations

import json

import polars as pl

from dmp import synth
from dmp.cli import cli
from dmp.ingest.eventlog import scan_events
from dmp.ingest.worker import status
from dmp.matrix import builds, snapshots

UNTIL = 1_790_000_000_000


def test_the_same_seed_makes_the_same_data():
    """generate() is a pure function of its arguments."""
    one, two = synth.generate(60, 30, 5, UNTIL), synth.generate(60, 30, 5, UNTIL)
    assert one.hits == two.hits and one.crm_rows == two.crm_rows
    assert one.newsletter_rows == two.newsletter_rows
    other = synth.generate(60, 30, 6, UNTIL)
    assert other.hits != one.hits
    assert all(UNTIL - 30 * synth.DAY_MS <= h.timestamp <= UNTIL + 3_600_000 for h in one.hits)


def test_synth_makes_a_dataset_a_marketer_can_read(runner, redis, config):
    """Tiers, stages, bots and unconsented visitors all show; funnel and pyramid add up."""
    result = runner.invoke(
        cli, ["synth", "--persons", "300", "--days", "45", "--seed", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    made = json.loads(result.output[result.output.index("{\n") :])
    assert made["crm_rows"] > 0 and made["newsletter_rows"] > 0
    state = status(redis)
    assert state["pending"] == 0 and state["events_aggregate"] > 0  # no-consent visitors
    assert min(state["persons"].values()) > 0  # low, medium and high all present
    log = scan_events(config.events_dir).collect()
    bots = log.filter(pl.col("is_bot"))
    assert bots.height > 0 and bots["person_id"].null_count() == bots.height
    assert {"pixel", "tag", "crm", "newsletter"} <= set(log["source"])
    built = builds.build(redis, config)
    funnel = snapshots.latest_funnel(config)
    assert funnel is not None and funnel["persons"] == built.persons
    assert sum(s["persons"] for s in funnel["stages"]) == built.persons
    assert (
        sum(t["persons"] for t in funnel["tiers"])
        == built.persons
        == sum(state["persons"].values())
    )
    stages = {s["stage"] for s in funnel["stages"] if s["persons"]}
    assert {"lead", "sal"} <= stages
    rows = pl.read_parquet(built.path)
    assert rows["next_content"].null_count() < rows.height  # the catalog was applied
    assert rows.filter(pl.col("score") > 0).height > 0
