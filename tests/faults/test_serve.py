"""Faults under a real `dmp serve`: its embedded Redis killed, its ingest worker killed.

Each test runs `python -m dmp serve` on a fresh data dir (its own embedded Redis) and
kills processes with SIGKILL as an operator or the OOM killer would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import redis as redis_lib
import requests

from dmp.serve.waiter import describe_exit, parse_report
from dmp.storage import keyspace, redisserver
from tests.factories import read_metric
from tests.served import (
    children,
    free_port,
    healthy,
    mount,
    redis_pid,
    run_dmp,
    serve_env,
    stop_process,
    wait_for,
)


@dataclass
class Served:
    """A running `dmp serve` and what it logged."""

    url: str
    data_dir: Path
    proc: subprocess.Popen
    lines: list[str]

    def redis_pid(self) -> int:
        """Return the pid the embedded Redis wrote into its pid file."""
        return redis_pid(self.data_dir)

    def redis(self) -> redis_lib.Redis:
        """Return a client of the embedded Redis (that never starts one itself)."""
        return redisserver.connect(redisserver.locate_server(self.data_dir).url)

    def logged(self, text: str) -> list[str]:
        """Return the log lines containing ``text``."""
        return [line for line in list(self.lines) if text in line]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """Run `dmp serve` (one web process) on a fresh data dir; stop it and its Redis after."""
    data_dir, port = tmp_path / "data", free_port()
    env = {**serve_env(data_dir), "DMP_SEGMENTS_EVERY": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmp", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    run = Served(f"http://127.0.0.1:{port}", data_dir, proc, lines)
    try:
        wait_for(lambda: healthy(run.url) or proc.poll() is not None, 30, "dmp serve to start")
        assert proc.poll() is None, "".join(lines)
        yield run
    finally:
        stop_process(proc)
        pid_file = data_dir / "redis" / "redis.pid"
        if pid_file.exists() and _alive(pid := int(pid_file.read_text())):
            os.kill(pid, signal.SIGKILL)  # a server left behind by a failed test


def _send_pixels(run: Served, key: str, first: int, count: int) -> None:
    with requests.Session() as browser:
        for i in range(first, first + count):
            params = {"k": key, "url": f"https://acme.de/p{i}", "consent": "analytics"}
            gif = browser.get(f"{run.url}/p.gif", params=params, timeout=5)
            assert gif.headers["Content-Type"] == "image/gif"


def _stored(run: Served) -> int:
    try:
        return int(run.redis().hget(keyspace.partition(0).stats, "events_stored") or 0)
    except redis_lib.RedisError:
        return -1


def test_serve_restarts_its_killed_redis_and_ingest_resumes(served: Served):
    """kill -9 of the embedded redis-server: serve starts it again from its AOF within
    seconds (no one restarts anything), /healthz answers 200 again, the ingest worker
    resumes, each of the 60 hits (30 before, 30 after) is stored once, and the outage is
    logged in a few lines, not a traceback per retry."""
    key = run_dmp(served.data_dir, "sites", "add", "Acme", "--domain", "acme.de").split()[-1]
    _send_pixels(served, key, 0, 30)
    wait_for(lambda: _stored(served) == 30, 15, "the first 30 hits to be stored")
    before = served.redis_pid()
    os.kill(before, signal.SIGKILL)
    wait_for(lambda: served.redis_pid() != before and healthy(served.url), 10, "Redis back")
    assert _alive(served.redis_pid())
    _send_pixels(served, key, 30, 30)
    wait_for(lambda: _stored(served) == 60, 15, "the next 30 hits to be stored")
    log = pl.read_parquet(served.data_dir / "events" / "*" / "*.parquet")
    assert log.height == 60 and log["url"].n_unique() == 60
    # The supervisor's and the worker's lines come out in their own time (a loaded machine).
    wait_for(lambda: served.logged("embedded Redis is available again"), 15, "the outage's end")
    wait_for(
        lambda: (
            len(served.logged("dmp.ingest.worker: Redis is available again"))
            == len(served.logged("dmp.ingest.worker: Redis is unavailable"))
        ),
        15,
        "the worker's outage to end",
    )
    assert len(served.logged("embedded Redis is unavailable")) == 1
    assert len(served.logged("restarted embedded Redis")) == 1
    assert len(served.logged("dmp.ingest.worker: Redis is unavailable")) <= 1
    assert not served.logged("ingest worker exited"), "".join(served.lines)
    assert len(served.logged("Traceback")) == 0, "".join(served.lines)


def test_a_cli_command_beside_serve_never_stops_its_redis(served: Served):
    """`dmp status` run beside serve leaves serve's Redis as it was (the same process, no
    restart by the supervisor); run right after that Redis was killed, so that the command
    may be the one to start it, it does not stop it on exit either."""
    pid = served.redis_pid()
    assert _alive(pid) and healthy(served.url)
    done = _status(served)
    assert "started embedded Redis" not in done.stderr, done.stderr  # it attached
    assert "stopped embedded Redis" not in done.stderr, done.stderr
    time.sleep(1.5)  # three of the supervisor's looks: it would restart a stopped server
    assert served.redis_pid() == pid and _alive(pid)
    assert not served.logged("restarted embedded Redis"), "".join(served.lines)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), 5, "redis-server to die")
    done = _status(served)
    assert "stopped embedded Redis" not in done.stderr, done.stderr
    wait_for(lambda: _alive(served.redis_pid()) and healthy(served.url), 10, "Redis back")
    after = served.redis_pid()
    time.sleep(1.5)
    assert served.redis_pid() == after and served.redis().ping()
    assert len(served.logged("restarted embedded Redis")) <= 1  # by serve, or by status


def _status(run: Served) -> subprocess.CompletedProcess:
    """Run `dmp -v status --json` beside serve (-v: it says whether it started or stopped
    the embedded Redis); check that it found nothing pending."""
    done = subprocess.run(
        [sys.executable, "-m", "dmp", "-v", "status", "--json"],
        env=serve_env(run.data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pending"] == 0
    return done


def test_a_killed_ingest_worker_is_logged_as_killed_and_restarted(served: Served):
    """kill -9 of the ingest worker is logged as "killed by SIGKILL" (not "exited with 0",
    which gunicorn's reaping of every child made it), and a new worker ingests."""
    key = run_dmp(served.data_dir, "sites", "add", "Acme", "--domain", "acme.de").split()[-1]

    def workers() -> list[int]:
        return [p for p in _descendants(served.proc.pid) if _is_worker(_cmdline(p))]

    wait_for(lambda: len(workers()) == 1, 5, "one ingest worker")
    first = workers()[0]
    os.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(
        lambda: served.logged("ingest worker killed by SIGKILL"), 10, "the worker's death logged"
    )
    wait_for(lambda: workers() and workers()[0] != first, 10, "a new ingest worker")
    _send_pixels(served, key, 0, 10)
    # Within the dead worker's lease time (15 s): serve frees its lease for the next one.
    wait_for(lambda: _stored(served) == 10, 10, "hits stored by the new worker")
    assert time.monotonic() - killed < 10
    assert served.logged(f"freed the lease of the dead ingest worker (pid {first})")
    assert not served.logged("exited with 0")


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone meanwhile


def _is_worker(cmdline: bytes) -> bool:
    return b"\x00worker\x00" in cmdline and b"dmp.serve.waiter" not in cmdline


def _attach_in_a_child(data_dir: Path) -> None:
    """Run a short process that attaches to the embedded server and exits, as the CLI does."""
    code = "import sys; from pathlib import Path; from dmp.storage import redisserver; "
    code += "redisserver.attach_embedded(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, str(data_dir)], check=True, timeout=30)


def test_a_command_never_stops_a_server_it_did_not_start(tmp_path: Path):
    """A short command attaching to a running server leaves it running at exit, even when
    it was its only client; one that started the server stops it if it is the last."""
    server = redisserver.locate_server(tmp_path)
    try:
        redisserver.attach_embedded(tmp_path, stop_at_exit=False)
        _attach_in_a_child(tmp_path)
        assert redisserver.answers(server)
    finally:
        redisserver.stop_if_last(server)
    assert not redisserver.answers(server)
    _attach_in_a_child(tmp_path)  # it starts the server, so it stops it
    assert not redisserver.answers(server)


def test_a_store_loading_longer_than_a_start_may_take_is_waited_for(tmp_path: Path, monkeypatch):
    """A million persons' store takes minutes to load its AOF; Redis answers LOADING
    meanwhile, or nothing while it replays a long command. The start waits for it as long
    as it lives (one that does not listen within START_SECONDS fails), and a second
    process attaching meanwhile waits too, never starting another server on its files."""
    server = redisserver.attach_embedded(tmp_path, stop_at_exit=False)
    slow = 120  # DEBUG POPULATE and DEBUG RELOAD take seconds on a busy machine
    client = redis_lib.Redis(unix_socket_path=str(server.socket), socket_timeout=slow)
    client.execute_command("DEBUG", "POPULATE", 500_000, "key", 100)
    client.bgrewriteaof()
    wait_for(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, 60, "the AOF")
    client.close()
    assert redisserver.stop_if_last(server) is True and not redisserver.answers(server)
    monkeypatch.setattr(redisserver, "START_SECONDS", 0.1)  # loading takes longer
    redisserver.attach_embedded(tmp_path, stop_at_exit=False)
    client = redis_lib.Redis(unix_socket_path=str(server.socket), socket_timeout=slow)
    try:
        assert client.dbsize() == 500_000
        # Loading again (as after a restart that another process began): a command
        # attaching meanwhile waits until the data is there, then works on it.
        reload = threading.Thread(target=lambda: client.execute_command("DEBUG", "RELOAD"))
        reload.start()
        wait_for(lambda: redisserver._state(server) == "loading", 30, "loading")
        code = "import sys; from pathlib import Path; "
        code += "from dmp.storage import redisserver as s; "
        code += "server = s.attach_embedded(Path(sys.argv[1])); "
        code += "print(s._direct_client(server, timeout=5).dbsize())"  # asks once
        run = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        reload.join(60)
        assert run.returncode == 0 and run.stdout.split() == ["500000"], run.stderr
    finally:
        client.close()
        redisserver.stop_if_last(server)


def test_no_process_stops_a_server_that_a_serve_owns(tmp_path: Path):
    """While another process holds serve.lock (a `dmp serve`, even one killed later: the
    kernel drops the flock with it), stop_if_last leaves the server running."""
    server = redisserver.attach_embedded(tmp_path, stop_at_exit=False)
    code = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
    code += "print('held', flush=True); time.sleep(60)"
    owner = subprocess.Popen(
        [sys.executable, "-c", code, str(server.directory / "serve.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout.readline().strip() == "held"
        assert redisserver.stop_if_last(server) is False and redisserver.answers(server)
    finally:
        owner.kill()
        owner.wait()
    assert redisserver.stop_if_last(server) is True and not redisserver.answers(server)


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (0, "exited with status 0"),
        (1, "exited with status 1"),
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (None, "ended without a report (its waiter died)"),
    ],
)
def test_an_exit_is_described_truly(code: int | None, said: str):
    """How a child ended is said as it happened: its status, or the signal that killed it."""
    assert describe_exit(code) == said


def test_a_waiter_reports_its_commands_pid_and_true_exit_status():
    """The waiter runs a command that dies of SIGKILL and reports its pid and -9, while
    itself exiting 0 (its own status may be reaped by gunicorn and lost)."""
    cmd = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    done = subprocess.run(
        [sys.executable, "-m", "dmp.serve.waiter", *cmd], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    pid, code = parse_report(done.stdout)
    assert code == -9 and pid > 0 and describe_exit(code) == "killed by SIGKILL"
    assert parse_report("") is None


def test_a_served_dmp_shows_a_read_only_events_folder_and_resumes_by_itself(served: Served):
    """Under a real `dmp serve` (worker and web in different processes): hits taken while
    the events folder is read-only make /healthz answer 200 "degraded" and /metrics show
    the failure, the worker neither crashes nor logs per retry, and once the folder is
    writable the 50 hits are stored once and /healthz is ok."""
    events = served.data_dir / "events"
    events.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(events)):
        pytest.skip("needs root to mount a tmpfs")
    try:
        assert mount("-o", "remount,ro", str(events))
        key = run_dmp(served.data_dir, "sites", "add", "Acme", "--domain", "acme.de").split()[-1]
        _send_pixels(served, key, 0, 50)

        def health() -> dict:
            return requests.get(f"{served.url}/healthz", timeout=2).json()

        wait_for(lambda: health()["status"] == "degraded", 10, "/healthz to say degraded")
        assert "Read-only file system" in health()["ingest"]["flush_error"]
        metrics = requests.get(f"{served.url}/metrics", timeout=2).text
        assert read_metric(metrics, "dmp_eventlog_flush_failing") == 1
        assert mount("-o", "remount,rw", str(events))
        wait_for(lambda: _stored(served) == 50, 10, "the 50 hits to be stored")
        assert health() == {"status": "ok"}
    finally:
        subprocess.run(["umount", "-l", str(events)], check=False)
    assert len(served.logged("the event log folder is unavailable")) == 1
    assert len(served.logged("the event log folder is available again")) == 1
    assert not served.logged("ingest worker exited") and not served.logged("killed by")
    assert not served.logged("Traceback"), "".join(served.lines)


def test_a_supervisor_that_found_serve_lock_held_takes_over_once_it_is_let_go(tmp_path: Path):
    """serve.lock held by another process as serve starts (a CLI command mid-shutdown, or
    a serve that dies later): the Supervisor attaches, takes the lock once the holder lets
    go, and from then on restarts its server after a kill -9."""
    server = redisserver.locate_server(tmp_path)
    server.directory.mkdir(parents=True)
    code = "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
    code += "print('held', flush=True); sys.stdin.read()"  # until its stdin is closed
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(server.directory / "serve.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    supervisor = redisserver.Supervisor(server)
    try:
        assert holder.stdout.readline().strip() == "held"
        supervisor.start()
        assert not supervisor.owns and redisserver.answers(server)
        holder.stdin.close()
        holder.wait(10)
        pid_file = server.directory / "redis.pid"
        first = int(pid_file.read_text())
        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: (
                pid_file.exists()
                and int(pid_file.read_text() or 0) != first
                and redisserver.answers(server)
            ),
            15,
            "the supervisor to restart the server",
        )
        assert supervisor.owns
    finally:
        holder.kill()
        holder.wait()
        supervisor.stop()
    assert not redisserver.answers(server)


def test_the_supervisor_restarts_a_killed_server_and_a_second_one_only_attaches(
    tmp_path: Path,
):
    """A Supervisor restarts its server within a second of a kill -9, with the data of its
    AOF; a second serve's Supervisor on the same data dir attaches without watching, and
    stopping it leaves the server to the owner, whose stop ends it."""
    owner = redisserver.Supervisor(redisserver.locate_server(tmp_path))
    owner.start()
    client = redisserver.connect(owner.server.url)
    second = redisserver.Supervisor(redisserver.locate_server(tmp_path))
    try:
        client.set("kept", "yes")
        time.sleep(1.2)  # appendfsync everysec
        pid_file = owner.server.directory / "redis.pid"
        first = int(pid_file.read_text())
        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: (
                pid_file.exists()
                and int(pid_file.read_text() or 0) != first
                and redisserver.answers(owner.server)
            ),
            3,
            "the server restarted",
        )
        assert client.get("kept") == "yes"
        second.start()
        second.stop()
        assert redisserver.answers(owner.server)
    finally:
        client.close()
        owner.stop()
    assert not redisserver.answers(owner.server)
