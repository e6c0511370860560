"""The ops endpoints: /metrics in the Prometheus text format, /healthz for load balancers."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from dmp.app import create_app
from dmp.ingest.flushstate import FlushState
from dmp.storage import keyspace, metrics
from tests.factories import read_metric, scrape


def _families(client) -> dict[str, tuple[str, list]]:
    """Return /metrics parsed by prometheus_client: family name -> (type, samples)."""
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(scrape(client))}


def test_metrics_answers_the_prometheus_content_type(client):
    """/metrics answers 200 with prometheus_client's text content type."""
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == CONTENT_TYPE_LATEST


def test_counters_appear_with_labels_help_and_type(client, redis):
    """Counters written with metrics.incr show their labels, HELP, TYPE and values."""
    metrics.incr(redis, metrics.hits_counter("pixel", "ok"), 3)
    metrics.incr(redis, metrics.hits_counter("api", "bad_input"))
    metrics.incr(redis, metrics.counter("dmp_spool_dropped_total"), 4)
    text = scrape(client)
    lines = text.splitlines()
    assert f"# HELP dmp_hits_total {metrics.HELP['dmp_hits_total']}" in lines
    assert "# TYPE dmp_hits_total counter" in lines
    assert "# TYPE dmp_spool_dropped_total counter" in lines
    assert read_metric(text, "dmp_hits_total", collector="pixel", outcome="ok") == 3
    assert read_metric(text, "dmp_hits_total", collector="api", outcome="bad_input") == 1
    assert read_metric(text, "dmp_spool_dropped_total") == 4


def test_metrics_parse_with_prometheus_client(client, redis):
    """The whole body parses with prometheus_client's parser: counters and the ingest gauges."""
    metrics.incr(redis, metrics.hits_counter("pixel", "ok"), 2)
    families = _families(client)
    kind, samples = families["dmp_hits"]
    assert kind == "counter" and [(s.name, s.labels, s.value) for s in samples] == [
        ("dmp_hits_total", {"collector": "pixel", "outcome": "ok"}, 2.0)
    ]
    gauges = ["dmp_spool_bytes", "dmp_stream_pending", "dmp_events_stored", "dmp_persons"]
    assert all(families[name][0] == "gauge" for name in gauges)
    assert families["dmp_eventlog_flush_failing"][1][0].value == 0


def test_label_values_with_quotes_backslashes_and_newlines_round_trip(client, redis):
    """A label value that counter() escaped reaches Prometheus as it was given."""
    odd = 'say "hi"\\back\nslash'
    metrics.incr(redis, metrics.counter("dmp_test_total", path=odd), 5)
    (sample,) = _families(client)["dmp_test"][1]
    assert sample.labels == {"path": odd} and sample.value == 5


def test_a_counter_past_a_million_reads_back_exactly(client, redis):
    """Values are written as prometheus_client writes them (1.2345678e+07 for a large
    count), and parse back to the exact count."""
    metrics.incr(redis, metrics.counter("dmp_bots_total"), 12_345_678)
    text = scrape(client)
    assert "dmp_bots_total 1.2345678e+07" in text.splitlines()
    assert read_metric(text, "dmp_bots_total") == 12_345_678


def test_a_counter_not_named_total_is_untyped(client, redis):
    """A stored name without _total is exposed as it is, untyped, its name as its HELP."""
    metrics.incr(redis, metrics.counter("dmp_thing", kind="x"), 2)
    text = scrape(client)
    assert "# TYPE dmp_thing untyped" in text.splitlines()
    assert read_metric(text, "dmp_thing", kind="x") == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dmp_x_total{", "1"),
        ('dmp_x_total{a="open}', "1"),
        ('dmp_x_total{a="1" b="2"}', "1"),
        ('dmp_x_total{a="1",a="2"}', "1"),
        ('dmp_x_total{a="bad \\q escape"}', "1"),
        ('dmp_x_total{a="raw\nnewline"}', "1"),
        ('dmp_x_total{a="1"}junk', "1"),
        ("9dmp_x_total", "1"),
        ("dmp x_total", "1"),
        ("dmp_x_total", "many"),
    ],
)
def test_a_malformed_field_is_skipped_and_logged(client, redis, caplog, field, value):
    """A field that is no counter of ours is left out; /metrics still answers and parses."""
    metrics.incr(redis, metrics.hits_counter("pixel", "ok"))
    redis.hset(keyspace.METRICS, field, value)
    caplog.set_level(logging.DEBUG, logger="dmp.storage.metrics")
    families = _families(client)
    assert "dmp_x" not in families and families["dmp_hits"][1][0].value == 1
    (record,) = [r for r in caplog.records if r.name == "dmp.storage.metrics"]
    assert record.levelno == logging.DEBUG and repr(field) in record.getMessage()


def test_malformed_fields_are_logged_in_one_line_per_scrape(client, redis, caplog):
    """Two malformed fields give one debug line naming both, not one line each."""
    redis.hset(keyspace.METRICS, mapping={"bad{": 1, "worse{": 2})
    caplog.set_level(logging.DEBUG, logger="dmp.storage.metrics")
    scrape(client)
    (record,) = [r for r in caplog.records if r.name == "dmp.storage.metrics"]
    assert "'bad{'" in record.getMessage() and "'worse{'" in record.getMessage()


def test_healthz_is_ok_while_redis_answers(client):
    """/healthz answers 200 {"status": "ok"} when Redis answers and flushes work."""
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


def test_healthz_is_degraded_while_event_log_flushes_fail(client, redis):
    """A failing flush is 200 "degraded" with its error; /metrics shows it failing."""
    FlushState(redis, logging.getLogger("test")).failed(OSError("No space left on device"))
    resp = client.get("/healthz")
    body = resp.get_json()
    assert resp.status_code == 200 and body["status"] == "degraded"
    assert "No space left on device" in body["ingest"]["flush_error"]
    assert body["ingest"]["failures"] == 1
    text = scrape(client)
    assert read_metric(text, "dmp_eventlog_flush_failing") == 1
    assert read_metric(text, "dmp_eventlog_flush_failures_total") == 1


def test_healthz_is_503_while_redis_is_away(config, tmp_path):
    """/healthz answers 503 "unavailable" when Redis does not answer."""
    away = create_app(replace(config, redis_url=f"unix://{tmp_path / 'no-redis.sock'}"))
    try:
        resp = away.test_client().get("/healthz")
    finally:
        away.extensions["dmp"].appender.close()
    assert resp.status_code == 503 and resp.get_json()["status"] == "unavailable"


def _ops_client(config, **settings):
    app = create_app(replace(config, **settings))
    app.testing = True
    return app


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong-token", 401),
        ("Basic c2NyYXBlOnM=", 401),
        ("Bearer é", 401),
        ("Bearer s3cret", 200),
    ],
)
def test_a_metrics_token_is_required_once_set(config, authorization, status) -> None:
    """With DMP_METRICS_TOKEN, /metrics answers only a scrape that sends it as a bearer
    token (refusals are problem+json); /healthz stays open for load balancers."""
    app = _ops_client(config, metrics_token="s3cret")
    try:
        client = app.test_client()
        headers = {"Authorization": authorization} if authorization else {}
        res = client.get("/metrics", headers=headers)
        assert res.status_code == status
        if status == 401:
            assert res.mimetype == "application/problem+json" and b"dmp_" not in res.data
        assert client.get("/healthz").status_code == 200
    finally:
        app.extensions["dmp"].appender.close()


@pytest.mark.parametrize(
    ("remote", "status"), [("127.0.0.1", 200), ("::1", 200), ("10.0.0.7", 403)]
)
def test_metrics_can_be_kept_to_loopback(config, remote, status) -> None:
    """With DMP_METRICS_LOOPBACK_ONLY=1, /metrics answers only scrapes from this host."""
    app = _ops_client(config, metrics_loopback_only=1)
    try:
        res = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": remote})
        assert res.status_code == status
    finally:
        app.extensions["dmp"].appender.close()
