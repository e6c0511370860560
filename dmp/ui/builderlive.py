"""The segment builder's live preview and plan, remembered per definition and matrix build.

A preview (:func:`dmp.membership.preview.preview`) or a plan
(:func:`dmp.membership.plan.plan`) evaluates the definition over the whole latest matrix:
at a million persons that takes longer than a keystroke, so each answer is kept for its
definition's ``where`` and the build it read (and, for a plan, the version stored now):
typing back to an earlier definition, switching language or reloading costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import redis

from dmp.config import Config
from dmp.matrix import snapshots
from dmp.membership import definitions
from dmp.membership.plan import plan
from dmp.membership.preview import preview
from segments.definition import SegmentDefinition

KEEP = 64  # answers kept per process
SAMPLE = 10  # members shown with the conditions they met


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
        with self.lock:
            self.found[key] = answer
            while len(self.found) > self.keep:
                self.found.popitem(last=False)
        return answer


MEMO = Memo()


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def build_id(config: Config) -> str | None:
    """Return the name of the latest matrix build (None before the first)."""
    found = snapshots.latest_snapshot(config)
    return None if found is None else found.name


def live_preview(config: Config, r: redis.Redis, definition: SegmentDefinition) -> dict[str, Any]:
    """Return the preview of a definition on the latest build, with ``seconds`` it took
    (LookupError before the first build)."""
    build = build_id(config)
    if build is None:
        raise LookupError("no matrix yet")
    key = _digest("preview", definition.source["where"], build)
    return MEMO.get(key, lambda: _timed(lambda: preview(r, config, definition, SAMPLE)))


def live_plan(config: Config, r: redis.Redis, definition: SegmentDefinition) -> dict[str, Any]:
    """Return who saving a definition would add and remove (its one plan entry), with
    ``seconds`` it took (LookupError before the first build)."""
    build = build_id(config)
    if build is None:
        raise LookupError("no matrix yet")
    stored = definitions.get_segment(r, definition.id)
    now = None if stored is None else stored.definition.canonical()
    key = _digest("plan", definition.id, definition.source["where"], build, now)

    def make() -> dict[str, Any]:
        answer = plan(r, config, [definition])
        return answer["segments"][0] | {"as_of": answer["as_of"]}

    found = MEMO.get(key, lambda: _timed(make))
    # The name and description do not change who is in; whether saving changes anything
    # does (a new name is a new version).
    changed = stored is None or stored.definition.canonical() != definition.canonical()
    return found | {"changed": changed}


def _timed(make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    answer = make()
    return answer | {"seconds": time.perf_counter() - started}
