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
