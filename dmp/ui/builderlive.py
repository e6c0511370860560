"""The segment builder's live preview and plan: an estimate at once, the exact answer after.

A preview (:func:`dmp.membership.preview.preview`) or a plan
(:func:`dmp.membership.plan.plan`) evaluates the definition over the whole latest matrix:
at a million persons that takes seconds, longer than a keystroke. So the page first gets
an estimate from the build's sample (:mod:`dmp.membership.estimates`: tens of
milliseconds) while the exact answer is made in the background (:class:`Background`: one
thread, the newest asked kept, older waiting ones dropped; the work itself in one child
process at a lower CPU priority, so that it does not slow the estimates down); the page
asks again each second until the exact answer replaces the estimate. A small matrix is
previewed whole at once. Each answer is kept for its definition's ``where`` and the build
it read (and, for a plan, the version stored now): typing back to an earlier definition,
switching language or reloading costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import redis

from dmp.config import Config
from dmp.matrix import snapshots
from dmp.membership import definitions, previewsample
from dmp.membership.estimates import estimate_plan, estimate_preview
from dmp.membership.plan import plan
from dmp.membership.preview import preview
from dmp.membership.previewsample import Sample
from dmp.storage import redisserver
from segments.definition import SegmentDefinition
from segments.evaluator import describe_failure

log = logging.getLogger(__name__)
KEEP = 64  # answers kept per process
SAMPLE = 10  # members shown with the conditions they met
WAITING = 2  # exact answers waiting to be made (a preview and a plan of the newest edit)
NICE = 10  # the child making exact answers yields the CPU to the pages' estimates
_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_CHILD_REDIS: redis.Redis | None = None


class Memo:
    """The last ``KEEP`` answers by key, safe across a threaded server's requests."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.found: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Return the answer kept for ``key``, else make, keep and return it."""
        with self.lock:
            if key in self.found:
                self.found.move_to_end(key)
                return self.found[key]
        answer = make()
        self.put(key, answer)
        return answer

    def peek(self, key: str) -> dict[str, Any] | None:
        """Return the answer kept for ``key``, or None."""
        with self.lock:
            return self.found.get(key)

    def put(self, key: str, answer: dict[str, Any]) -> None:
        """Keep an answer (the oldest beyond ``keep`` go)."""
        with self.lock:
            self.found[key] = answer
            self.found.move_to_end(key)
            while len(self.found) > self.keep:
                self.found.popitem(last=False)


class Background:
    """Exact answers made on one thread, the newest asked first kept: at most ``waiting``
    wait (the older are dropped: the page that wants one asks again), and each answer,
    or its failure, is kept in ``memo``."""

    def __init__(self, memo: Memo, waiting: int = WAITING) -> None:
        self.memo, self.waiting = memo, waiting
        self.queue: OrderedDict[str, Callable[[], dict[str, Any]]] = OrderedDict()
        self.failed: OrderedDict[str, str] = OrderedDict()
        self.running: str | None = None
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def submit(self, key: str, make: Callable[[], dict[str, Any]]) -> None:
        """Queue ``make`` for ``key`` unless it is known, failed, queued or being made."""
        with self.lock:
            if self.memo.peek(key) is not None or key in self.failed or key == self.running:
                return
            self.queue[key] = make
            self.queue.move_to_end(key)
            while len(self.queue) > self.waiting:
                self.queue.popitem(last=False)
            if self.thread is None:
                self.thread = threading.Thread(target=self._work, daemon=True)
                self.thread.start()

    def failure(self, key: str) -> str | None:
        """Return why the exact answer for ``key`` could not be made (None: it has not)."""
        with self.lock:
            return self.failed.get(key)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until nothing is queued or being made (tests)."""
        with self.lock:
            thread = self.thread
        if thread is not None:
            thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self.lock:
                if not self.queue:
                    self.thread = self.running = None
                    return
                key, make = self.queue.popitem(last=False)
                self.running = key
            try:
                self.memo.put(key, make())
            except Exception as exc:  # the page says so; the estimate stays
                log.exception("builder: the exact answer failed")
                with self.lock:
                    self.failed[key] = describe_failure(exc)
                    while len(self.failed) > KEEP:
                        self.failed.popitem(last=False)


MEMO = Memo()  # exact answers
ESTIMATES = Memo()  # answers estimated from a build's sample
BACKGROUND = Background(MEMO)


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def warm(config: Config, r: redis.Redis) -> None:
    """Start reading the latest build's sample on a thread if estimates will need it (a
    builder page opens: the sample is ready by the first change)."""
    try:
        snapshot, manifest = snapshots.latest_build(config)
    except LookupError:
        return
    if not previewsample.is_small(snapshot):
        previewsample.ready_sample(r, config, snapshot, manifest)


def live_preview(config: Config, r: redis.Redis, definition: SegmentDefinition) -> dict[str, Any]:
    """Return the preview of a definition on the latest build, with ``seconds`` it took:
    exact if known (or the matrix is small), else estimated from the build's sample while
    the exact one is made in the background, else ``{"preparing": True}`` while the sample
    is read (LookupError before the first build)."""
    snapshot, manifest = snapshots.latest_build(config)
    key = _digest("preview", definition.source["where"], snapshot.name)

    def here() -> dict[str, Any]:
        return _timed(lambda: exact_preview(config, definition, r))

    def there() -> dict[str, Any]:
        return _timed(lambda: in_child(exact_preview, config, definition))

    build = (snapshot, manifest)
    return _answer(r, config, build, key, (here, there), estimate_preview, definition)


def live_plan(config: Config, r: redis.Redis, definition: SegmentDefinition) -> dict[str, Any]:
    """Return who saving a definition would add and remove (its one plan entry), with
    ``seconds`` it took: exact, estimated or preparing, as :func:`live_preview`
    (LookupError before the first build)."""
    snapshot, manifest = snapshots.latest_build(config)
    stored = definitions.get_segment(r, definition.id)
    now = None if stored is None else stored.definition.canonical()
    key = _digest("plan", definition.id, definition.source["where"], snapshot.name, now)

    def here() -> dict[str, Any]:
        return _timed(lambda: exact_plan(config, definition, r))

    def there() -> dict[str, Any]:
        return _timed(lambda: in_child(exact_plan, config, definition))

    def estimate(sample: Sample, d: SegmentDefinition) -> dict[str, Any]:
        return estimate_plan(r, sample, d)

    build = (snapshot, manifest)
    found = _answer(r, config, build, key, (here, there), estimate, definition)
    # The name and description do not change who is in; whether saving changes anything
    # does (a new name is a new version).
    changed = stored is None or stored.definition.canonical() != definition.canonical()
    return found | {"changed": changed}


def _answer(
    r: redis.Redis,
    config: Config,
    build: tuple[Path, dict],
    key: str,
    exact: tuple[Callable[[], dict[str, Any]], Callable[[], dict[str, Any]]],
    estimate: Callable[[Sample, SegmentDefinition], dict[str, Any]],
    definition: SegmentDefinition,
) -> dict[str, Any]:
    """The exact answer if known or quick to make (here: ``exact[0]``); else the estimate,
    the exact one queued (made in the child process: ``exact[1]``)."""
    known = MEMO.peek(key)
    if known is not None:
        return known
    if previewsample.is_small(build[0]):
        return MEMO.get(key, exact[0])
    BACKGROUND.submit(key, exact[1])
    sample = previewsample.ready_sample(r, config, *build)
    if sample is None:
        return {"preparing": True, "estimate": True, "failed": BACKGROUND.failure(key)}
    found = ESTIMATES.get(key, lambda: _timed(lambda: estimate(sample, definition)))
    return found | {"failed": BACKGROUND.failure(key)}


def exact_preview(
    config: Config, definition: SegmentDefinition, r: redis.Redis | None = None
) -> dict[str, Any]:
    """Return the exact preview of a definition (in the child: on its own connection)."""
    return preview(r or _child_redis(config), config, definition, SAMPLE)


def exact_plan(
    config: Config, definition: SegmentDefinition, r: redis.Redis | None = None
) -> dict[str, Any]:
    """Return a definition's exact plan entry, with ``as_of`` (in the child: as above)."""
    answer = plan(r or _child_redis(config), config, [definition])
    return answer["segments"][0] | {"as_of": answer["as_of"]}


def _child_redis(config: Config) -> redis.Redis:
    """The child's client: the configured server or the data dir's embedded one (found,
    never started or stopped here: the web process looks after it)."""
    global _CHILD_REDIS
    if _CHILD_REDIS is None:
        _CHILD_REDIS = redisserver.connect_running(config)
    return _CHILD_REDIS


def in_child(make: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Return ``make(*args)`` computed in this process's child (started on first use, at
    a lower CPU priority: the estimates the pages wait for come first)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            context = multiprocessing.get_context("spawn")
            _POOL = ProcessPoolExecutor(1, context, initializer=os.nice, initargs=(NICE,))
        pool = _POOL
    try:
        return pool.submit(make, *args).result()
    except BrokenProcessPool:  # the child died (out of memory?): the next one starts anew
        with _POOL_LOCK:
            _POOL = None if _POOL is pool else _POOL
        raise


def _timed(make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    answer = make()
    return answer | {"seconds": time.perf_counter() - started}
