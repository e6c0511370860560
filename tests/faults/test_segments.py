"""Faults around segments: a bad definition fails alone, the schedule runs on a fresh boot."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import types

import polars as pl
import pytest

from dmp.cli import cli, main
from dmp.matrix import builds, sources
from dmp.membership import definitions, live, results, runs, schedule
from dmp.storage import keyspace
from segments import evaluator
from segments.language import Compare, Did, parse_where
from segments.matrix import TOUCHPOINT_SCHEMA
from segments.rules import Op, When
from tests.factories import (
    MATRIX_NOW,
    MATRIX_SCHEMA,
    apply_segments,
    bearer,
    make_hit,
    make_identify,
    matrix_row,
    run_synth,
    send_hits,
    touch_row,
)
from tests.served import wait_for


@pytest.fixture
def synth(runner) -> int:
    """Return a time just after 60 synth persons' 20 days of data."""
    return run_synth(runner, 60, 20, 7)


def test_the_first_run_comes_at_start_on_a_machine_booted_seconds_ago(
    synth, redis, config, monkeypatch
):
    """The monotonic clock counts from boot: five seconds after boot, with a run due
    every hour, the schedule still runs at once when it starts."""
    apply_segments(redis, "id: all\nwhere: {score: {gte: 0}}")
    booted = types.SimpleNamespace(monotonic=lambda: 5.0)  # this module's clock only
    monkeypatch.setattr(schedule, "time", booted)
    hourly = dataclasses.replace(config, segments_every=3600, segments_latency=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=schedule.run_schedule, args=(redis, hourly, stop))
    thread.start()
    try:
        ran = wait_for(lambda: results.latest_run(config), 20, "a run at the schedule's start")
    finally:
        stop.set()
        thread.join(30)
    assert ran["members"]["all"] > 0


OUT_OF_RANGE = [
    ('{"did": {"event": "page", "within_days": 1e400}}', "where.did.within_days"),
    ('{"did": {"event": "page", "within_days": -1e400}}', "where.did.within_days"),
    ('{"did": {"event": "page", "within_days": NaN}}', "where.did.within_days"),
    ('{"did": {"event": "page", "within_days": 36500}}', "where.did.within_days"),
    (
        '{"did": {"event": "a", "then": {"event": "b", "within_days": Infinity}}}',
        "where.did.then.within_days",
    ),
    (
        '{"did": {"event": "page", "count_gte": 100000000000000000000000000000}}',
        "where.did.count_gte",
    ),
    ('{"did": {"event": "page", "count_gte": true}}', "where.did.count_gte"),
    ('{"all": [{"tier": "low"}, {"score": {"gte": 1e400}}]}', "where.all[1].score.gte"),
    ('{"score": {"contains": "1"}}', "where.score.contains"),
    ('{"interest": {"topic": "crm", "gte": 1e400}}', "where.interest.gte"),
    ('{"trait": {"name": "employees", "in": [1, -1e400]}}', "where.trait.in"),
    ('{"did": {"property": "size", "lt": 1e300}}', "where.did.property.lt"),
]


@pytest.mark.parametrize(("where", "path"), OUT_OF_RANGE)
def test_the_api_refuses_numbers_out_of_range(client, admin_key, where, path):
    """PUT and preview answer 422 naming the path (1e400 days was stored with 201, and
    every run after it failed); nothing is stored."""
    auth = bearer(admin_key)
    body = '{"id": "p", "name": "p", "where": ' + where + "}"  # as sent: JSON takes 1e400
    for method, url in (("PUT", "/api/v1/segments/p"), ("POST", "/api/v1/segments/preview")):
        got = client.open(
            url, method=method, data=body, headers=auth, content_type="application/json"
        )
        assert got.status_code == 422, got.get_data(as_text=True)
        assert got.mimetype == "application/problem+json"
        assert got.get_json()["detail"].startswith(path + ": expected")
    assert client.get("/api/v1/segments", headers=auth).get_json() == []


YAML_OUT_OF_RANGE = [
    ("{did: {event: page, within_days: .inf}}", "where.did.within_days"),
    ("{did: {event: page, within_days: 1.0e+400}}", "where.did.within_days"),
    ("{did: {event: page, within_days: .nan}}", "where.did.within_days"),
    ("{did: {event: page, within_days: 3651}}", "where.did.within_days"),
    ("{did: {event: page, count_eq: 2.5}}", "where.did.count_eq"),
    ("{score: {gte: -.inf}}", "where.score.gte"),
    ("{score: {exists: true}}", "where.score.exists"),
    ("{trait: {name: employees, gte: 1000000000000000000}}", "where.trait.gte"),
]


@pytest.mark.parametrize(("where", "path"), YAML_OUT_OF_RANGE)
def test_the_cli_refuses_numbers_out_of_range(redis, main_argv, capsys, tmp_path, where, path):
    """`dmp segments apply` exits 2 with one line naming the path; nothing is stored."""
    file = tmp_path / "p.yaml"
    file.write_text(f"id: p\nwhere: {where}\n")
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "segments", "apply", str(file)])
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"{path}: expected" in err
    assert definitions.list_segments(redis) == []


HEALTHY = """
id: active
where: {did: {event: page, within_days: 30}}
---
id: known
where: {tier: {gte: medium}}
---
id: p
where: {did: {event: page, within_days: 7}}
"""


def _poison(redis, sid: str, where: dict) -> None:
    """Store a definition as segmentstore does, past its checks (as one stored before a
    check existed): canonical JSON, a new version, a versions entry."""
    key = keyspace.segment(sid)
    version = int(redis.hget(key, "version") or 0) + 1
    source = {"id": sid, "name": sid, "description": "", "where": where}
    text = json.dumps(source, sort_keys=True, separators=(",", ":"))  # inf: Infinity
    with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(keyspace.SEGMENTS, sid)
        pipe.hset(key, mapping={"definition": text, "version": version, "updated": 1, "name": sid})
        entry = {"version": version, "at": 1, "definition": source}
        pipe.rpush(keyspace.segment(sid, "versions"), json.dumps(entry))
        pipe.execute()


def _set(redis, sid: str) -> set[str]:
    return redis.smembers(keyspace.segment(sid, "members"))


def _run_members(config, sid: str) -> set[str]:
    found = results.latest_members(config).filter(pl.col("segment_id") == sid).collect()
    return set(found["person_id"])


def test_a_poisoned_stored_definition_fails_alone_and_keeps_its_members(
    synth, redis, config, runner, client, admin_key, caplog
):
    """1e400 days stored beside healthy segments (as the API stored it before the check):
    every run goes on with the others (a new one gets members), records the poisoned one
    as failed with its error, logs one line for it, and leaves its members of the last
    run in the snapshot and in the lookup sets; the CLI and the API show the failure."""
    apply_segments(redis, HEALTHY)
    first = runs.run(redis, config)
    before = _set(redis, "p")
    assert before and first.members["p"] == len(before)
    _poison(redis, "p", {"did": {"event": "page", "within_days": float("inf")}})
    apply_segments(redis, "id: late\nwhere: {score: {gte: 0}}")
    for _ in range(2):  # and again: the failure does not wear the members away
        with caplog.at_level(logging.ERROR, logger="dmp.membership.runs"):
            caplog.clear()
            ran = runs.run(redis, config)
        assert set(ran.failed) == {"p"}
        assert ran.failed["p"].startswith("where.did.within_days: expected a positive number")
        assert ran.members["late"] > 0 and ran.members["active"] == first.members["active"]
        assert ran.members["p"] == len(before) and ran.left == 0
        assert _run_members(config, "p") == before and _set(redis, "p") == before
        assert all("p" in redis.smembers(keyspace.person(pid, "segments")) for pid in before)
        lines = [r for r in caplog.records if " p " in r.getMessage()]
        assert len(lines) == 1 and "within_days" in lines[0].getMessage()
    printed = runner.invoke(cli, ["segments", "run", "--no-build"])
    assert printed.exit_code == 0, printed.output
    assert "FAILED" in printed.output and "failed p: where.did.within_days" in printed.output
    record = results.run_records(redis)[0]
    assert record["run_id"] != ran.run_id and record["failed"] == ran.failed
    listed = json.loads(runner.invoke(cli, ["segments", "runs", "--json"]).output)
    assert listed[0]["failed"] == ran.failed
    text = runner.invoke(cli, ["segments", "runs"]).output
    assert "1 failed" in text and "failed p: where.did.within_days" in text
    auth = bearer(admin_key)
    shown = client.get("/api/v1/segments/runs", headers=auth).get_json()
    assert shown[0]["failed"] == ran.failed and shown[-1]["failed"] == {}


# Faults no check catches: p's condition compiled to an expression polars refuses, either
# as soon as it meets the columns' types or only on rows (the combined pass raises and
# the segments are tried one by one). Text operators on number columns did the first
# until the language refused them.
BREAKS = {
    "on the columns' types": lambda: pl.col("score").str.contains("1", literal=True),
    "only on rows": lambda: pl.col("email").str.to_integer(strict=True) > 0,
}
MARKED = Compare("score", Op.GTE, 13.25)


def _break_p(monkeypatch, how: str) -> None:
    """Make the tree of p (``score: {gte: 13.25}``) compile to a breaking expression."""
    original = evaluator.compile_node
    broken = BREAKS[how]
    monkeypatch.setattr(
        evaluator,
        "compile_node",
        lambda node, profile=(): broken() if node == MARKED else original(node, profile),
    )


@pytest.mark.parametrize("how", list(BREAKS))
def test_a_segment_that_fails_when_run_fails_alone(synth, redis, config, monkeypatch, how):
    """A stored definition that passes every check but raises when evaluated: the run
    records it as failed with the error, runs the others, keeps its members."""
    text = HEALTHY.replace("{did: {event: page, within_days: 7}}", "{score: {gte: 13.25}}")
    apply_segments(redis, text)
    first = runs.run(redis, config)
    before = _set(redis, "p")
    assert before and first.members["p"] == len(before)
    _break_p(monkeypatch, how)
    ran = runs.run(redis, config)
    assert set(ran.failed) == {"p"} and "Error" in ran.failed["p"]
    assert "\n" not in ran.failed["p"]
    assert {k: v for k, v in ran.members.items() if k != "p"} == {
        k: v for k, v in first.members.items() if k != "p"
    }
    assert ran.members["p"] == len(before) and ran.entered == ran.left == 0
    assert _run_members(config, "p") == before and _set(redis, "p") == before
    assert results.run_records(redis)[0]["failed"] == ran.failed


@pytest.mark.parametrize("how", list(BREAKS))
def test_the_live_lane_leaves_a_failing_segment_be(synth, redis, drain, config, monkeypatch, how):
    """A tick with a failing segment moves the others' lookup sets for the new persons and
    leaves the failing one's sets as they were."""
    text = HEALTHY.replace("{did: {event: page, within_days: 7}}", "{score: {gte: 13.25}}")
    apply_segments(redis, text)
    builds.build(redis, config, synth)
    runs.run(redis, config, build_matrix=False)
    before_files = set(sources.event_files(config.events_dir))
    before = _set(redis, "p")
    later = synth + 60_000
    send_hits(
        redis,
        make_hit(uid="c-live", timestamp=later - 30_000, url="https://acme.de/pricing"),
        make_identify("live@example.org", uid="c-live"),
    )
    drain()
    new = sorted(set(sources.event_files(config.events_dir)) - before_files)
    _break_p(monkeypatch, how)
    tick = live.live_tick(redis, config, new, set(), later)
    assert set(tick.failed) == {"p"} and "Error" in tick.failed["p"]
    (pid,) = tick.person_ids
    assert redis.smembers(keyspace.person(pid, "segments")) == {"active", "known"}
    assert _set(redis, "p") == before


def _evaluate_apart(trees: dict, attempt=None):
    """Run evaluate_apart over two matrix rows as tests/segments/test_language evaluates
    them; return its result and how many passes ``attempt`` made."""
    matrix = pl.LazyFrame([matrix_row("a"), matrix_row("b", score=1.0)], schema=MATRIX_SCHEMA)
    touches = pl.LazyFrame([touch_row("a", 1)], schema=TOUCHPOINT_SCHEMA)
    passes = []

    def one_pass(some):
        passes.append(sorted(some))
        if attempt is not None:
            attempt(some)
        return evaluator.evaluate(matrix, touches, some, MATRIX_NOW).collect()

    def check(tree, run):
        evaluator.check_segment(tree, MATRIX_SCHEMA, TOUCHPOINT_SCHEMA, MATRIX_NOW, run=run)

    got = evaluator.evaluate_apart(trees, one_pass, check, (ConnectionError,))
    return got, passes


def test_one_pass_leaves_out_a_segment_that_cannot_compile():
    """A tree no parser would let through (infinite days, built as an AST) is left out
    when compiled apart; the others still run in the one pass (no fallback passes)."""
    trees = {
        "ok": parse_where({"score": {"gte": 50}}),
        "bad": Did(When(()), float("inf"), Op.GTE, 1),
        "seen": parse_where({"did": {"event": "page", "within_days": 30}}),
    }
    (flags, failed), passes = _evaluate_apart(trees)
    assert passes == [["ok", "seen"]]
    assert failed == {"bad": "OverflowError: cannot convert float infinity to integer"}
    assert flags.sort("person_id").rows() == [("a", True, True), ("b", False, False)]


def test_a_fault_that_is_no_segments_is_raised():
    """A pass that fails whatever the segments (here every pass, each segment alone too)
    raises its error, and a fatal error (storage, network) is raised at once: no segment
    is blamed for them."""
    trees = {"ok": parse_where({"score": {"gte": 50}}), "low": parse_where({"score": {"lt": 9}})}

    def broken(some):
        raise ValueError("the matrix file is damaged")

    with pytest.raises(ValueError, match="damaged"):
        _evaluate_apart(trees, broken)

    def only_together(some):
        if len(some) > 1:
            raise ValueError("too many at once")

    with pytest.raises(ValueError, match="too many"):
        _evaluate_apart(trees, only_together)

    def gone(some):
        raise ConnectionError("Redis went away")

    with pytest.raises(ConnectionError):
        _evaluate_apart(trees, gone)
