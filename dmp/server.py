"""``dmp serve``: gunicorn web processes plus one ingest worker process.

The master attaches the embedded Redis server (or uses ``DMP_REDIS_URL``) before it forks,
passes its URL to every child, and keeps one connection open so that CLI commands run
alongside never mistake themselves for the server's last client.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from typing import Any

from gunicorn.app.base import BaseApplication

from dmp import redisserver
from dmp.config import Config

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
        """Return dmp.webserver's settings: worker and logger classes, parser, limits."""
        from dmp import webserver  # imported when serving, as the app is

        return webserver.gunicorn_options(threads)


class IngestProcess:
    """The ``dmp worker`` child process, restarted if it dies."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ingest-watch", daemon=True)

    def start(self) -> None:
        """Start the worker and a thread that restarts it should it exit."""
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "dmp", "worker", "--parent", str(os.getpid())]
        # A little lower priority: ingest catches up between bursts, and the web
        # processes keep their latency (pixel p99 1.9× → 1.2× the bare app, BENCHMARKS.md).
        self._proc = subprocess.Popen(cmd, env=self._env, preexec_fn=lambda: os.nice(10))
        log.info("ingest worker started (pid %d)", self._proc.pid)

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            if self._proc is not None and self._proc.poll() is not None:
                log.error("ingest worker exited with %s; restarting", self._proc.returncode)
                self._spawn()

    def stop(self) -> None:
        """Stop the worker gracefully (it flushes what it holds first)."""
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def serve(
    config: Config, host: str, port: int, workers: int, threads: int, ingest: bool = True
) -> None:
    """Run the web processes (and the ingest worker) until interrupted."""
    env = dict(os.environ)
    if config.redis_url:
        url = config.redis_url
    else:
        url = redisserver.attach_embedded(config.data_dir).url
        env["DMP_REDIS_URL"] = url
    os.environ["DMP_REDIS_URL"] = url
    env["DMP_DATA_DIR"] = str(config.data_dir)
    keeper = redisserver.connect(url)  # held open for as long as we serve
    keeper.ping()
    worker = IngestProcess(env) if ingest else None

    def on_starting(_arbiter) -> None:
        if worker:
            worker.start()

    def on_exit(_arbiter) -> None:
        if worker:
            worker.stop()
        keeper.close()  # let the embedded server stop at exit if no one else uses it

    options = {
        "bind": f"{host}:{port}",
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
        # carries a key or a full IP (dmp.webserver).
        **_Gunicorn.edge_options(threads),
    }
    from dmp.app import create_app

    log.info("dmp serving on http://%s:%d with %d web processes", host, port, workers)
    _Gunicorn(options, lambda: create_app({"redis_url": url})).run()
