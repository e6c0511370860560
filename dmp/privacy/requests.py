"""Person requests (erasure, unmerge): ask the ingest worker, wait for its report.

A request goes onto the ingest stream as a control entry (``dmp.people.control`` says
why). With no worker running (a CLI on a stopped installation) the caller runs the
worker once itself, as ``dmp worker --once`` would.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import redis

from dmp.config import Config
from dmp.ingest import stream
from dmp.ingest.worker import Worker
from dmp.people import control
from dmp.people.erasure import ERASE
from dmp.people.unmerge import UNMERGE
from dmp.storage import keyspace

WAIT_SECONDS = 10.0  # how long the API waits for the worker before answering 202
QUEUED_SECONDS = 7 * 24 * 3600  # how long a request not applied yet can be asked about


def request(r: redis.Redis, kind: str, person_id: str, **props: str) -> str:
    """Queue a person request of ``kind`` for the worker; return the request id."""
    request_id = secrets.token_hex(8)
    also = [("SET", keyspace.control_queued(request_id), person_id, "EX", QUEUED_SECONDS)]
    hit = control.control_hit(kind, person_id, request_id, **props)
    stream.enqueue(r, [hit], {}, atomic=True, also=also)
    return request_id


def request_erasure(r: redis.Redis, person_id: str, by: str = "", reason: str = "") -> str:
    """Queue the erasure of ``person_id``; return the request id."""
    return request(r, ERASE, person_id, by=by, reason=reason)


def request_unmerge(r: redis.Redis, person_id: str, by: str = "") -> str:
    """Queue undoing the merge of ``person_id`` (a merged-away id); return the request id."""
    return request(r, UNMERGE, person_id, by=by)


def report(r: redis.Redis, request_id: str) -> dict[str, Any] | None:
    """Return a request's report once the worker applied it, else None."""
    return control.stored_report(r, request_id)


def queued(r: redis.Redis, request_id: str) -> bool:
    """Return whether a request was made and waits for the worker (not applied yet)."""
    return bool(r.exists(keyspace.control_queued(request_id))) and report(r, request_id) is None


def wait_for(r: redis.Redis, request_id: str, seconds: float) -> dict[str, Any] | None:
    """Return the request's report, waiting up to ``seconds`` for the worker."""
    deadline = time.monotonic() + seconds
    while True:
        found = report(r, request_id)
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def run(r: redis.Redis, config: Config, request_id: str, wait: float = 60) -> dict[str, Any] | None:
    """Return a queued request's report, running the worker once if none runs."""
    if not r.exists(keyspace.partition(0).lease):  # control entries go to partition 0
        Worker(r, config).run(once=True)
    return wait_for(r, request_id, wait)
