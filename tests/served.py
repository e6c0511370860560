"""Real processes for the tests that need them: `dmp` commands, a `dmp serve`'s settings,
mounts, the children of a process, and a private embedded Redis a test may kill, hang and
start again."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis as redis_lib
import requests

from dmp.storage import redisserver

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a loopback port nobody listens on (on ``host``: IPv4's or IPv6's)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve_env(data_dir: Path) -> dict[str, str]:
    """Return this environment without DMP_* settings, on ``data_dir``, flushing often."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMP_")}
    env["DMP_DATA_DIR"] = str(data_dir)
    env["DMP_FLUSH_SECONDS"] = "0.5"
    return env


def run_dmp(data_dir: Path, *args: str) -> str:
    """Run a `dmp` command on ``data_dir``; return its output (it must succeed)."""
    return run_in(serve_env(data_dir), *args, timeout=120)


def run_in(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    """Run a `dmp` command in ``env``; return its output (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "dmp", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def wait_for(check: Callable[[], T], seconds: float, what: str) -> T:
    """Poll ``check`` until it returns something true and return that; fail the test after
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.05)
    return found


def redis_pid(data_dir: Path) -> int:
    """Return the pid the embedded Redis of ``data_dir`` wrote into its pid file, waiting
    out a restart's moment between the file's truncation and its write (an empty file)."""

    def read() -> int:
        try:
            return int((data_dir / "redis" / "redis.pid").read_text())
        except (OSError, ValueError):
            return 0

    return wait_for(read, 10, "the embedded Redis's pid file to hold its pid")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM a process (a `dmp serve`) and wait for it; kill it if it takes over 30 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def mount(*args: str) -> bool:
    """Run mount(8) with these arguments; return whether it worked (it needs root)."""
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return done.returncode == 0


def children(pid: int) -> list[int]:
    """Return the pids of a process's children (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def web_processes(proc: subprocess.Popen) -> list[int]:
    """Return the pids of a `dmp serve`'s gunicorn worker processes: its children that are
    neither its ingest worker, a lookup process nor its embedded Redis."""
    found = []
    for pid in children(proc.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[1:3] == [b"-m", b"dmp"] and not {b"worker", b"lookups"} & set(argv):
            found.append(pid)
    return found


def wait_for_web_processes(proc: subprocess.Popen, n: int = 2) -> list[int]:
    """Wait until a `dmp serve` runs ``n`` web processes; return their pids."""

    def running() -> list[int]:
        found = web_processes(proc)
        return found if len(found) == n else []

    return wait_for(running, 30, f"{n} web processes")


def connection_holders(server_port: int, client_ports: set[int], pids: list[int]) -> Counter:
    """Return how many of the loopback connections from ``client_ports`` to ``server_port``
    each of ``pids`` holds the server's end of (from /proc/net/tcp and the fds)."""
    inodes = {
        inode
        for local, remote, _, inode in _tcp_sockets()
        if local == server_port and remote in client_ports
    }
    return Counter({pid: len(held) for pid, held in _held(inodes, pids).items() if held})


def listeners_held(server_port: int, pids: list[int]) -> dict[int, set[str]]:
    """Return the sockets listening on ``server_port`` (by inode) each of ``pids`` has
    open (from /proc/net/tcp and tcp6, and the fds)."""
    listening = {
        inode for local, _, state, inode in _tcp_sockets() if state == "0A" and local == server_port
    }
    return _held(listening, pids)


def _tcp_sockets() -> Iterator[tuple[int, int, str, str]]:
    """Yield each TCP socket's local port, remote port, state (0A: listening) and inode
    as its fds name it (``socket:[N]``), IPv4's and IPv6's."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
            yield local, remote, fields[3], f"socket:[{fields[9]}]"


def _held(inodes: set[str], pids: list[int]) -> dict[int, set[str]]:
    """Return which of the sockets ``inodes`` each of ``pids`` has an fd of."""
    held: dict[int, set[str]] = {pid: set() for pid in pids}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue  # closed meanwhile
            if link in inodes:
                held[pid].add(link)
    return held


def healthy(url: str) -> bool:
    """Return whether a served dmp answers /healthz with 200."""
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


class OwnRedis:
    """A private embedded Redis that a test may kill and start again (on its AOF)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.info = redisserver.attach_embedded(data_dir, stop_at_exit=False)

    @property
    def url(self) -> str:
        """Return the server's URL."""
        return self.info.url

    @property
    def pid(self) -> int:
        """Return the running server's pid."""
        return int((self.info.directory / "redis.pid").read_text())

    def kill(self, *, written: bool = True) -> None:
        """kill -9 the server and wait until it no longer answers.

        With ``written``, first wait (up to 5 s) until its AOF buffer is written: under
        ``appendfsync everysec`` Redis postpones that write for up to 2 s while a background
        fsync runs (a busy disk), answering meanwhile, and a kill -9 in that window loses
        what it answered (RELIABILITY.md says so). The fault tests are about the outage that
        follows, not about that window of Redis's own. Without it, at once: a test of
        what a kill does to commands in flight."""
        with contextlib.suppress(redis_lib.RedisError):
            r = redis_lib.Redis.from_url(self.url, socket_timeout=1)
            for _ in range(100 if written else 0):
                if int(r.info("persistence").get("aof_buffer_length", 0)) == 0:
                    break
                time.sleep(0.05)
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)  # a zombie until its parent reaps it: gone once it is silent
            if not _answers(self.url):
                return

    def start(self) -> None:
        """Start it again on the same files (its AOF)."""
        self.info = redisserver.attach_embedded(self.data_dir, stop_at_exit=False)

    @contextlib.contextmanager
    def hung(self) -> Iterator[None]:
        """SIGSTOP the server (it keeps its socket but answers nothing) until the block ends."""
        pid = self.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        """Shut it down (if it runs), resuming it first if a test left it hung."""
        with contextlib.suppress(OSError, ValueError):  # no pid file, or no such process
            os.kill(self.pid, signal.SIGCONT)
        with contextlib.suppress(redis_lib.RedisError):  # not running: nothing to stop
            redis_lib.Redis(unix_socket_path=str(self.info.socket)).shutdown(nosave=True)


def _answers(url: str) -> bool:
    try:
        return bool(redis_lib.Redis.from_url(url, socket_timeout=1).ping())
    except redis_lib.RedisError:
        return False
