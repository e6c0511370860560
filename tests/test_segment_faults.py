"""Faults around segments: a bad definition fails alone, the schedule runs on a fresh boot."""

from __future__ import annotations

import dataclasses
import threading
import time
import types

import pytest

from dmp import segmentrun, segmentschedule, segmentstore
from dmp.cli import cli
from segments.definition import load_definitions


@pytest.fixture
def synth(runner):
    result = runner.invoke(cli, ["synth", "--persons", "60", "--days", "20", "--seed", "7"])
    assert result.exit_code == 0, result.output


def _wait(probe, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    return None


def test_the_first_run_comes_at_start_on_a_machine_booted_seconds_ago(
    synth, redis, config, monkeypatch
):
    """The monotonic clock counts from boot: five seconds after boot, with a run due
    every hour, the schedule still runs at once when it starts."""
    segmentstore.apply_definitions(redis, load_definitions("id: all\nwhere: {score: {gte: 0}}"))
    booted = types.SimpleNamespace(monotonic=lambda: 5.0)  # this module's clock only
    monkeypatch.setattr(segmentschedule, "time", booted)
    hourly = dataclasses.replace(config, segments_every=3600, segments_latency=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=segmentschedule.run_schedule, args=(redis, hourly, stop))
    thread.start()
    try:
        ran = _wait(lambda: segmentrun.latest_run(config), 20)
    finally:
        stop.set()
        thread.join(30)
    assert ran is not None, "no run within 20 s of the schedule's start"
    assert ran["members"]["all"] > 0


OUT_OF_RANGE = [
    ('{"did": {"event": "page", "within_days": 1e400}}', "where.did.within_days"),
    ('{"did": {"event": "page", "within_days": -1e400}}', "where.did.within_days"),
    ('{"did": {"event": "page", "within_days": NaN}}', "where.did.within_days"),
    ('{"did": {"event": "page", "within_days": 36500}}', "where.did.within_days"),
    ('{"did": {"event": "a", "then": {"event": "b", "within_days": Infinity}}}',
     "where.did.then.within_days"),
    ('{"did": {"event": "page", "count_gte": 100000000000000000000000000000}}',
     "where.did.count_gte"),
    ('{"did": {"event": "page", "count_gte": true}}', "where.did.count_gte"),
    ('{"all": [{"tier": "low"}, {"score": {"gte": 1e400}}]}', "where.all[1].score.gte"),
    ('{"score": {"contains": "1"}}', "where.score.contains"),
    ('{"interest": {"topic": "crm", "gte": 1e400}}', "where.interest.gte"),
    ('{"trait": {"name": "employees", "in": [1, -1e400]}}', "where.trait.in"),
    ('{"did": {"property": "size", "lt": 1e300}}', "where.did.property.lt"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "path"), OUT_OF_RANGE)
def test_the_api_refuses_numbers_out_of_range(client, admin_key, where, path):
    """PUT and preview answer 422 naming the path (1e400 days was stored with 201, and
    every run after it failed); nothing is stored."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    body = '{"id": "p", "name": "p", "where": ' + where + "}"  # as sent: JSON takes 1e400
    for method, url in (("PUT", "/api/v1/segments/p"), ("POST", "/api/v1/segments/preview")):
        got = client.open(url, method=method, data=body, headers=auth,
                          content_type="application/json")  # fmt: skip
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
    from dmp.cli import main

    file = tmp_path / "p.yaml"
    file.write_text(f"id: p\nwhere: {where}\n")
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "segments", "apply", str(file)])
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"{path}: expected" in err
    assert segmentstore.list_segments(redis) == []
