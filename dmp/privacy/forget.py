"""Forgetting a person (GDPR Art. 17): ask the ingest worker, wait for its report.

The request goes onto the ingest stream (see ``dmp.people.erasure`` for why the worker
applies it). With no worker running (a CLI on a stopped installation), the caller runs
the worker once itself, as ``dmp worker --once`` would.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import redis

from dmp.config import Config
from dmp.ingest import stream
from dmp.ingest.worker import Worker
from dmp.people import erasure
from dmp.storage import keyspace

WAIT_SECONDS = 10.0  # how long the API waits for the worker before answering 202


def request_erasure(r: redis.Redis, person_id: str, by: str = "", reason: str = "") -> str:
    """Queue the erasure of ``person_id`` for the worker; return the request id."""
    request_id = secrets.token_hex(8)
    also = [
        ("SET", keyspace.erasure_queued(request_id), person_id, "EX", erasure.RESULT_SECONDS * 7)
    ]
    hit = erasure.control_hit(person_id, request_id, by, reason)
    stream.enqueue(r, [hit], {}, atomic=True, also=also)
    return request_id


def report(r: redis.Redis, request_id: str) -> dict[str, Any] | None:
    """Return a request's report once the worker applied it, else None."""
    found = r.get(keyspace.erasure_result(request_id))
    return json.loads(found) if found else None


def queued(r: redis.Redis, request_id: str) -> bool:
    """Return whether a request was made and waits for the worker (not applied yet)."""
    return bool(r.exists(keyspace.erasure_queued(request_id))) and report(r, request_id) is None


def wait_for(r: redis.Redis, request_id: str, seconds: float) -> dict[str, Any] | None:
    """Return the request's report, waiting up to ``seconds`` for the worker."""
    deadline = time.monotonic() + seconds
    while True:
        found = report(r, request_id)
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def worker_running(r: redis.Redis) -> bool:
    """Return whether an ingest worker holds its lease (it will apply the request)."""
    return bool(r.exists(keyspace.WORKER_LEASE))


def forget(
    r: redis.Redis, config: Config, person_id: str, by: str = "", reason: str = "", wait: float = 60
) -> dict[str, Any] | None:
    """Erase a person and return the report (None if no worker applied it in ``wait``)."""
    request_id = request_erasure(r, person_id, by, reason)
    if not worker_running(r):
        Worker(r, config).run(once=True)
    return wait_for(r, request_id, wait)
