"""The process the worker's scheduled segment runs go to.

A run (an incremental matrix build, every segment for everyone) is seconds of polars
work on both cores at a million persons. In the worker's own process it shared the
interpreter lock and polars' thread pool with the ingest and the live lane, whose
small queries then waited behind the run's: live ticks stretched from 0.5 s to 2–5 s
while a run went on, once a minute. So runs go to a child process of their own, at a
lower CPU priority (:data:`NICE`): the ingest, the live lane and the web processes come
first, and a run takes what is left of the minute.

The child is started (spawned: a fresh interpreter, no forked threads) at the first
run and kept for the next ones (a Spark session with it); one that died is started
anew at the next run. What a run raises in it is raised in the caller, the child's
traceback as its cause, so the schedule tells a busy lock, an outage and a failure
apart as before. The child logs to the same stderr, in the same format.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import traceback
from multiprocessing.connection import Connection

from dmp import logs
from dmp.config import Config

NICE = 10  # the run's process yields the cores to ingest, the live lane and the web
_POLL_SECONDS = 1.0  # how often the caller looks whether the child still lives

log = logging.getLogger(__name__)


class RunProcessDied(RuntimeError):
    """The child ended before it answered (killed, out of memory)."""


class RemoteTraceback(Exception):
    """The traceback of an error raised in the child (shown as the error's cause)."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


class RunProcess:
    """A child process that runs :func:`dmp.membership.runs.run` for ``config``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it lives (None before the first run)."""
        return self.process.pid if self.process is not None and self.process.is_alive() else None

    def run(self) -> None:
        """Run the segments once in the child; raise what the run raised there."""
        if self.pid is None:
            self._start()
        assert self.process is not None and self._conn is not None
        try:
            self._conn.send("run")
            while not self._conn.poll(_POLL_SECONDS):
                if not self.process.is_alive():
                    break
            outcome = self._conn.recv()
        except (EOFError, OSError) as exc:  # the child ended: nothing more comes
            self.process.join(5)
            code = self.process.exitcode
            self.process = None
            raise RunProcessDied(f"the segment run's process ended (exit code {code})") from exc
        if outcome is not None:
            error, text = outcome
            raise error from RemoteTraceback(text)

    def close(self) -> None:
        """Let the child go (it ends once a run under way is done)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _start(self) -> None:
        self.close()
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        level = logging.getLogger("dmp").getEffectiveLevel()
        self.process = context.Process(
            target=_serve,
            args=(self.config, theirs, level),
            name="dmp-segment-runs",
            daemon=True,  # ended with the worker, as its thread was
        )
        self.process.start()
        theirs.close()
        self._conn = ours
        log.debug("segment runs go to process %d", self.process.pid)


def _serve(config: Config, conn: Connection, level: int) -> None:
    """The child: a run for each order, until the caller closes its end."""
    os.nice(NICE)
    logs.setup(level)
    from dmp.membership import runs  # here: the child's imports, not the caller's
    from dmp.storage.redisserver import connect_running

    r = connect_running(config)
    while True:
        try:
            conn.recv()
        except (EOFError, OSError):  # the worker is gone or let go
            return
        try:
            runs.run(r, config)
            answer: tuple[BaseException, str] | None = None
        except Exception as exc:
            answer = (_portable(exc), traceback.format_exc())
        try:
            conn.send(answer)
        except OSError:
            return


def _portable(exc: Exception) -> BaseException:
    """Return the error as itself if it crosses a pipe intact, else as a RuntimeError
    saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
