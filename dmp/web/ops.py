"""Operations endpoints: ``/healthz`` for load balancers, ``/metrics`` for Prometheus."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify

from dmp.ingest import spool, worker
from dmp.ingest.flushstate import read_flush_state
from dmp.storage import metrics
from dmp.web.deps import current_deps

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Answer 200 when Redis answers, else 503 (the collectors cannot buffer hits).

    A failing event-log flush is 200 with status "degraded": the collectors still take
    hits (a balancer keeps sending them), but the event log is not being written.
    """
    try:
        flush = read_flush_state(current_deps().redis)
    except redis.RedisError as exc:
        return jsonify(status="unavailable", redis=str(exc)), 503
    if flush is not None:
        return jsonify(status="degraded", ingest=flush), 200
    return jsonify(status="ok"), 200


@bp.get("/metrics")
def prometheus() -> Response:
    """Return counters and ingest gauges in the Prometheus text format."""
    deps = current_deps()
    r = deps.redis
    state = worker.status(r)
    gauges: dict[str, float] = {
        # Hits collector processes spooled while Redis was away, not replayed yet.
        "dmp_spool_bytes": spool.spooled_bytes(deps.config.data_dir),
        "dmp_stream_pending": state["pending"],
        "dmp_events_stored": state["events_stored"],
        "dmp_eventlog_flush_failing": int(read_flush_state(r) is not None),
    }
    for tier, count in state["persons"].items():
        gauges[metrics.counter("dmp_persons", tier=tier)] = count
    return Response(metrics.render(r, gauges), mimetype="text/plain; version=0.0.4")
