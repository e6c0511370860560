"""Operations endpoints: ``/healthz`` for load balancers, ``/metrics`` for Prometheus."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from pathlib import Path

import redis
from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dmp.config import Config
from dmp.ingest import spool, worker
from dmp.ingest.flushstate import read_flush_state
from dmp.storage import metrics
from dmp.web.auth import bearer_token
from dmp.web.deps import current_deps
from dmp.web.problems import Problem
from dmp.web.schema import Obj, Text
from dmp.web.spec import ANONYMOUS, NO_KEY, Reply, describe, problem

bp = Blueprint("ops", __name__)


HEALTH = Obj({"status": Text(enum=("ok", "degraded", "unavailable"))}, required=("status",))


@bp.get("/healthz")
@describe(
    tag="ops",
    replies={
        200: Reply("Redis answers (status ok, or degraded while flushes fail).", schema=HEALTH),
        503: Reply("Redis is away: the collectors cannot buffer hits.", schema=HEALTH),
    },
)
def healthz() -> tuple[Response, int]:
    """Answer 200 when Redis answers, else 503 (the collectors cannot buffer hits).

    A failing event-log flush is 200 with status "degraded": the collectors still take
    hits (a balancer keeps sending them), but the event log is not being written.
    """
    body, status = health(current_deps().redis)
    return jsonify(body), status


def health(r: redis.Redis) -> tuple[dict, int]:
    """Return /healthz's answer and status (the lookup processes answer it too)."""
    try:
        flush = read_flush_state(r)
    except redis.RedisError as exc:
        return {"status": "unavailable", "redis": str(exc)}, 503
    if flush is not None:
        return {"status": "degraded", "ingest": flush}, 200
    return {"status": "ok"}, 200


@bp.get("/metrics")
@describe(
    tag="ops",
    security=(ANONYMOUS, "metricsToken"),
    replies={
        200: Reply("The Prometheus text format.", CONTENT_TYPE_LATEST.split(";")[0], Text()),
        401: NO_KEY,
        403: problem("DMP_METRICS_LOOPBACK_ONLY is set and the scrape is not from this host."),
    },
)
def prometheus() -> Response:
    """Return counters and ingest gauges in the Prometheus text format (to scrapes with
    DMP_METRICS_TOKEN, from this host with DMP_METRICS_LOOPBACK_ONLY, if set)."""
    deps = current_deps()
    _check_scraper(deps.config)
    registry = CollectorRegistry()
    registry.register(metrics.CounterCollector(deps.redis))
    registry.register(IngestGauges(deps.redis, deps.config.data_dir))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class IngestGauges(Collector):
    """The ingest gauges /metrics shows beside the counters, read at each collect."""

    def __init__(self, r: redis.Redis, data_dir: Path) -> None:
        self.r = r
        self.data_dir = data_dir

    def collect(self) -> Iterator[Metric]:
        """Yield the spool, stream, event-log and persons gauges."""
        state = worker.status(self.r)
        yield GaugeMetricFamily(
            "dmp_spool_bytes",
            "Bytes of hits collector processes spooled while Redis was away, not replayed yet.",
            value=spool.spooled_bytes(self.data_dir),
        )
        yield GaugeMetricFamily(
            "dmp_stream_pending", "Hits in the stream not ingested yet.", value=state["pending"]
        )
        yield GaugeMetricFamily(
            "dmp_events_stored", "Events stored in the event log.", value=state["events_stored"]
        )
        failing = int(read_flush_state(self.r) is not None)
        yield GaugeMetricFamily(
            "dmp_eventlog_flush_failing", "1 while event-log flushes fail, else 0.", value=failing
        )
        persons = GaugeMetricFamily("dmp_persons", "Persons by tier.", labels=["tier"])
        for tier, count in state["persons"].items():
            persons.add_metric([tier], count)
        yield persons


LOOPBACK = frozenset({"127.0.0.1", "::1"})


def _check_scraper(config: Config) -> None:
    """Raise 403 or 401 (problem+json) for a scrape the settings do not let in."""
    if config.metrics_loopback_only and request.remote_addr not in LOOPBACK:
        raise Problem(403, "Forbidden", "/metrics answers scrapes from this host only")
    token = config.metrics_token
    sent = bearer_token(request.authorization).encode("utf-8", "surrogateescape")
    if token and not hmac.compare_digest(sent, token.encode()):
        raise Problem(401, "Unauthorized", "send the metrics token as 'Authorization: Bearer'")
