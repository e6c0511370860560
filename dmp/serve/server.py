"""``dmp serve``: gunicorn web processes plus one ingest worker process.

The master owns the embedded Redis server (or uses ``DMP_REDIS_URL``): it starts it before
it forks, passes its URL to every child, restarts it should it die
(:class:`dmp.storage.redisserver.Supervisor`), and stops it at exit if no one else uses it.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from gunicorn.app.base import BaseApplication

from dmp.config import Config
from dmp.serve import waiter
from dmp.serve.sockets import http_url, web_sockets
from dmp.serve.waiter import describe_exit, parse_report
from dmp.storage import redisserver

log = logging.getLogger(__name__)


class _Gunicorn(BaseApplication):
    """Gunicorn with its settings from dmp, not from a config file or argv."""

    def __init__(self, options: dict[str, Any], app_factory) -> None:
        self._options = options
        self._factory = app_factory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings:  # settings newer than the installed gunicorn are skipped
                self.cfg.set(key, value)

    def load(self):
        return self._factory()

    @staticmethod
    def edge_options(threads: int) -> dict[str, Any]:
        """Return dmp.serve.edge's settings: worker and logger classes, parser, limits."""
        from dmp.serve import edge  # imported when serving, as the app is

        return edge.gunicorn_options(threads)


class Child:
    """A ``dmp`` command run as a child process (the ingest worker, a lookup process),
    restarted if it dies.

    It runs under a :mod:`dmp.serve.waiter`: gunicorn's arbiter (this process) reaps every
    child, so the command's own exit status would be lost; the waiter reports it.
    """

    RESTART_FIRST, RESTART_MAX = 0.5, 30.0  # seconds; doubled while it keeps dying young

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        on_death: Callable[[int], None] | None = None,
        nice: int = 0,
        fds: tuple[int, ...] = (),
    ) -> None:
        """``fds``: open files (a listening socket) the command inherits, as they are."""
        self.name, self._args, self._env, self._nice, self._fds = name, args, env, nice, fds
        self._on_death = on_death  # called with a dead command's pid before its restart
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{name}-watch", daemon=True)

    def start(self) -> None:
        """Start the command and a thread that restarts it should it exit."""
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        command = [sys.executable, "-m", "dmp", *self._args]
        nice = self._nice
        passed = ",".join(map(str, self._fds))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "dmp.serve.waiter", *command],
            env={**self._env, waiter.PASS_FDS: passed} if passed else self._env,
            pass_fds=self._fds,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
            start_new_session=True,  # a Ctrl-C reaches serve, which stops it after a flush
        )
        log.info("%s started (waiter pid %d)", self.name, self._proc.pid)

    def _watch(self) -> None:
        pause = self.RESTART_FIRST
        while self._proc is not None:
            started = time.monotonic()
            report = parse_report(self._proc.stdout.readline())  # blocks until it ends
            self._proc.stdout.close()
            if self._stop.is_set():
                return
            lived = time.monotonic() - started
            pause = self.RESTART_FIRST if lived > 60 else min(pause * 2, self.RESTART_MAX)
            said = describe_exit(report[1] if report else None)
            log.error("%s %s; restarting in %g s", self.name, said, pause)
            if report and self._on_death:
                self._on_death(report[0])
            if self._stop.wait(pause):
                return
            self._spawn()

    def stop(self) -> None:
        """Stop the command gracefully (a worker flushes what it holds first); wait up to
        30 s."""
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # the waiter passes it on to the worker
            # Not Popen.wait: gunicorn may have reaped the waiter, and wait() would return
            # at once. The watch thread returns once the waiter has reported and closed.
            self._thread.join(timeout=30)
            if self._thread.is_alive():
                self._proc.kill()


def _free_lease_of(url: str, consumer: str, pid: int) -> None:
    """Free the lease a dead ingest worker held, so that the next one need not wait it out."""
    from dmp.ingest.worker import release_dead_lease

    client = redisserver.connect(url)
    try:
        if release_dead_lease(client, consumer, pid):
            log.info("freed the lease of the dead ingest worker (pid %d)", pid)
    except redis.RedisError as exc:
        log.warning("could not free the dead ingest worker's lease: %s", exc)
    finally:
        client.close()


@dataclass(frozen=True, slots=True)
class Lookups:
    """The lookup processes ``dmp serve`` starts (:mod:`dmp.serve.lookups`): one per
    socket, each socket bound to ``port`` already."""

    port: int  # 0: none
    sockets: tuple[socket.socket, ...] = ()


def serve(
    config: Config,
    host: str,
    port: int,
    workers: int,
    threads: int,
    ingest: bool = True,
    lookups: Lookups = Lookups(0),
    web: list[socket.socket] | None = None,
) -> None:
    """Run the web processes, the lookup processes and the ingest worker until
    interrupted; the web processes on ``web``, the listening sockets
    ``dmp.serve.sockets.web_sockets`` gives (bound here if None)."""
    if web is None:
        web = web_sockets(host, port, workers, threads)
    env = dict(os.environ)
    supervisor = None
    if config.redis_url:
        url = config.redis_url
    else:
        supervisor = redisserver.Supervisor(redisserver.locate_server(config.data_dir))
        supervisor.start()  # owns the server: starts it now, restarts it should it die
        url = supervisor.server.url
        env["DMP_REDIS_URL"] = url
    os.environ["DMP_REDIS_URL"] = url
    env["DMP_DATA_DIR"] = str(config.data_dir)
    free_lease = lambda pid: _free_lease_of(url, config.consumer, pid)  # noqa: E731
    children = []
    if ingest:
        # A little lower priority: ingest catches up between bursts, and the web
        # processes keep their latency (pixel p99 1.9× → 1.2× the bare app, BENCHMARKS.md).
        worker = ["worker", "--parent", "{waiter}"]
        children.append(Child("ingest worker", worker, env, free_lease, nice=10))
    for n, sock in enumerate(lookups.sockets):
        args = ["lookups", "--fd", str(sock.fileno()), "--parent", "{waiter}"]
        children.append(Child(f"lookup process {n + 1}", args, env, fds=(sock.fileno(),)))

    def on_starting(_arbiter) -> None:
        for child in children:
            child.start()

    def on_exit(_arbiter) -> None:
        for child in children:
            child.stop()
        if supervisor:
            supervisor.stop()  # and the embedded server with it, if no one else uses it

    options = {
        # Bound already (dmp.serve.sockets); gunicorn's master holds them for its life.
        "bind": [f"fd://{sock.detach()}" for sock in web],
        "workers": workers,
        "threads": threads,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "dmp",
        "graceful_timeout": 20,
        "on_starting": on_starting,
        "on_exit": on_exit,
        "control_socket_disable": True,  # gunicorn ≥ 25: no shared control socket in $HOME
        # What gunicorn refuses gets the pixel's GIF or problem+json, and no log line
        # carries a key or a full IP (dmp.serve.edge).
        **_Gunicorn.edge_options(threads),
    }
    from dmp.app import create_app

    log.info("dmp serving on %s with %d web processes", http_url(host, port), workers)
    if lookups.sockets:
        log.info(
            "lookups also on %s/api/v1/lookup (%d processes)",
            http_url(host, lookups.port),
            len(lookups.sockets),
        )
    _Gunicorn(options, lambda: create_app({"redis_url": url})).run()
