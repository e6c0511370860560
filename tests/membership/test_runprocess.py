"""The scheduled runs' process: apart from the worker, niced, errors raised back,
replaced when it dies."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from dmp.config import Config
from dmp.membership import results, runprocess, runs, schedule
from dmp.membership.runprocess import RemoteTraceback, RunProcess, RunProcessDied
from dmp.storage import locks
from tests.factories import apply_segments, run_synth
from tests.served import OwnRedis, wait_for

SEGMENT = "id: active\nname: Active\nwhere: {did: {event: page, within_days: 30}}\n"


@pytest.fixture
def child(config: Config):
    process = RunProcess(config)
    yield process
    process.close()


def test_runs_go_to_a_process_of_their_own_at_a_lower_priority(runner, redis, config, child):
    """The run happens in a child that yields the CPU (nice +10) and is kept for the
    next run; what it did is there for everyone (the run record, the members)."""
    run_synth(runner, 30, 10, 3)
    apply_segments(redis, SEGMENT)
    child.run()
    first = child.pid
    assert first is not None and first != os.getpid()
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, first) == min(19, ours + runprocess.NICE)
    ran = results.latest_run(config)
    assert ran is not None and ran["members"]["active"] > 0
    child.run()
    assert child.pid == first, "the process is kept between runs"
    assert results.latest_run(config)["run_id"] != ran["run_id"]


def test_what_a_run_raises_there_is_raised_here(runner, redis, config, child):
    """A run that finds the lock held raises locks.Busy in the caller (the schedule
    keeps the API's request for later), with the child's traceback as its cause."""
    run_synth(runner, 10, 5, 3)
    with runs.run_lock(redis):
        with pytest.raises(locks.Busy) as raised:
            child.run()
    assert isinstance(raised.value.__cause__, RemoteTraceback)
    assert "runs.py" in str(raised.value.__cause__)
    child.run()  # the same child goes on
    assert results.latest_run(config) is not None


def test_a_process_that_dies_is_told_and_replaced(own_redis: OwnRedis, own_config: Config):
    """Killed while a run waits on it (out of memory, say), the child's end is an error
    of its own; the next run starts a new child."""
    env = {"DMP_REDIS_URL": own_redis.url, "DMP_DATA_DIR": str(own_config.data_dir)}
    run_synth(CliRunner(env=env), 10, 5, 3)
    child = RunProcess(own_config)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            child.run()
        except BaseException as exc:  # noqa: BLE001 (the test looks at it)
            raised.append(exc)

    try:
        with own_redis.hung():  # the run cannot end by itself meanwhile
            waiting = threading.Thread(target=run)
            waiting.start()
            pid = wait_for(lambda: child.pid, 30, "the child")
            os.kill(pid, signal.SIGKILL)
            waiting.join(30)
        assert len(raised) == 1 and isinstance(raised[0], RunProcessDied), raised
        assert "exit code -9" in str(raised[0])
        child.run()
        assert child.pid not in (None, pid)
        assert results.latest_run(own_config) is not None
    finally:
        child.close()


PARENT = """
import sys, time
from dmp.config import load_config
from dmp.membership.runprocess import RunProcess
child = RunProcess(load_config({"redis_url": sys.argv[1], "data_dir": sys.argv[2]}, env={}))
child.run()
print(child.pid, flush=True)
time.sleep(600)
"""


def test_the_child_ends_when_its_worker_is_killed(redis_url, config):
    """A worker killed outright (SIGKILL: no atexit) leaves no run process behind: the
    child sees its pipe close and ends."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, redis_url, str(config.data_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the parent said {line!r}"
        pid = int(line)
        assert _alive(pid)
        parent.kill()
        parent.wait(10)
        wait_for(lambda: not _alive(pid), 10, "the child to end")
    finally:
        parent.kill()
        parent.wait(10)


def _alive(pid: int) -> bool:
    """Whether the process lives (a zombie not reaped yet counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_schedule_runs_in_its_child_and_lets_it_go_at_stop(runner, redis, config):
    """The worker's schedule hands its runs to a spawned child of this process, and
    that child ends once the schedule stops."""
    run_synth(runner, 20, 5, 3)
    apply_segments(redis, SEGMENT)
    hourly = dataclasses.replace(config, segments_every=3600, segments_latency=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=schedule.run_schedule, args=(redis, hourly, stop))
    thread.start()
    try:
        wait_for(lambda: results.latest_run(config), 60, "the schedule's first run")
        kids = _spawned_children()
        assert len(kids) == 1, kids
    finally:
        stop.set()
        thread.join(30)
    wait_for(lambda: not _alive(kids[0]), 10, "the child to end after the stop")


def _spawned_children() -> list[int]:
    """The living processes this one spawned with multiprocessing (not its tracker)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                spawned = b"multiprocessing.spawn" in f.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and spawned and _alive(int(entry)):
            found.append(int(entry))
    return found
