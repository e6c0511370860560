"""What the tests build and read again and again: hits on the ingest stream, persons, API
headers, segment definitions, synth data, rows for the segments package, /metrics samples."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import polars as pl
import redis as redis_lib
from click.testing import CliRunner
from flask.testing import FlaskClient
from polars.testing import assert_frame_equal
from prometheus_client.parser import text_string_to_metric_families

from dmp.cli import cli
from dmp.config import Config
from dmp.ingest import stream
from dmp.ingest.appender import Appender
from dmp.membership import definitions
from dmp.people import profiles
from dmp.people.identity import Identifier, IdKind
from dmp.records import Hit
from dmp.storage import keyspace, lifetime
from segments.content import ContentItem
from segments.definition import load_definitions
from segments.matrix import PERSON_SCHEMA, TOUCHPOINT_SCHEMA, build_matrix
from segments.scoring import DAY_MS, ScoringModel
from segments.stages import STAGE_HISTORY_SCHEMA

NOW = 1_790_000_000_000  # 2026-09-21T14:13:20Z: when the hits of make_hit happen
MATRIX_NOW = 1_763_900_000_000  # the as-of time of the rows for the segments package

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


# --- hits on the ingest stream ------------------------------------------------------------


def make_hit(**fields) -> Hit:
    """Return a consented pixel page view at NOW with a fresh event id, overridden by
    ``fields``."""
    base = dict(
        event_id=uuid.uuid4().hex,
        site_id="acme-gmbh",
        source="pixel",
        type="page",
        event="page",
        received_at=NOW,
        timestamp=NOW,
        consent={"analytics": True, "ads": True, "email": False},
        url="https://acme.de/produkte?utm_source=x",
        topics=["crm"],
        user_agent=CHROME,
    )
    return Hit(**{**base, **fields})


def make_identify(
    email: str, uid: str = "", trusted: bool = True, user_id: str = "", **traits
) -> Hit:
    """Return a server-side identify with an email (and other traits), on cookie ``uid``,
    of ``user_id`` (``user-<email>`` unless given); ``trusted=False`` makes it a
    browser's claim (sent with the public write key)."""
    return make_hit(
        source="api",
        type="identify",
        event="identify",
        uid=uid,
        user_id=user_id or f"user-{email}",
        consent={} if trusted else {"analytics": True},
        traits={"email": email, **traits},
        trusted=trusted,
    )


def uids_on_every_partition(n: int = 4, prefix: str = "c") -> list[str]:
    """Return one cookie uid per ingest partition (of ``n``), as collectors route them."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < n:
        found.setdefault(stream.partition_of(make_hit(uid=f"{prefix}{i}"), n), f"{prefix}{i}")
        i += 1
    return [found[p] for p in range(n)]


def append_from_threads(appender: Appender, hits: list[list[Hit]], reads: Callable[[], int]) -> int:
    """Append each list of hits from a thread of its own, a hit at a time, as request
    threads do; sync and close the appender; return how far ``reads`` (Redis's count of
    the writes it read) moved meanwhile."""
    before = reads()
    try:
        threads = [
            threading.Thread(target=lambda mine=mine: [appender.append([h], {}) for h in mine])
            for mine in hits
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        appender.sync()
        return reads() - before
    finally:
        appender.close()


def send_hits(r: redis_lib.Redis, *hits: Hit) -> None:
    """Put hits on the ingest stream as a collector does (all together)."""
    stream.enqueue(r, hits, {}, atomic=True)


def flush_appenders() -> None:
    """Have this process's collectors send what their outboxes hold (they do within 2 ms;
    a test reading the stream right after a hit through a live server must not race it)."""
    for resident in lifetime.living():
        if isinstance(resident, Appender):
            resident.flush()


def stream_hits(r: redis_lib.Redis) -> list[Hit]:
    """Return the hits on the ingest stream, oldest first (this process's sent first)."""
    flush_appenders()
    return [
        Hit.from_json(fields[stream.FIELD]) for _, fields in r.xrange(keyspace.partition(0).stream)
    ]


# --- persons and the web API ---------------------------------------------------------------


def person_of(r: redis_lib.Redis, kind: IdKind, value: str) -> dict:
    """Return the admin view of the person owning an identifier (failing if nobody does)."""
    pid = profiles.find_person(r, Identifier(kind, value))
    assert pid is not None, f"nobody owns {kind.value}:{value}"
    return profiles.get_person(r, pid)


def consent_of(person: dict, category: str, identifier: str = "") -> dict | None:
    """Return a person's current consent record of ``category`` (for ``identifier``, as
    ``kind:value``; without one, the only record), or None when there is none."""
    records = person["consents"].get(category, [])
    if identifier:
        records = [r for r in records if r["identifier"] == identifier]
    assert len(records) <= 1, f"{len(records)} {category} consents: name the identifier"
    return records[0] if records else None


def bearer(key: str) -> dict[str, str]:
    """Return the Authorization header that presents an API key."""
    return {"Authorization": f"Bearer {key}"}


def cookie_uid(resp) -> str:
    """Return the dmp_uid cookie a collector's answer sets ("" when it drops the cookie)."""
    cookie = next(v for v in resp.headers.getlist("Set-Cookie") if v.startswith("dmp_uid="))
    return cookie.split(";")[0].split("=", 1)[1]


# --- segments and synth data -----------------------------------------------------------------


def apply_segments(r: redis_lib.Redis, text: str) -> list[tuple[str, int, bool]]:
    """Store the segment definitions of a YAML text as `dmp segments apply` does."""
    return definitions.apply_definitions(r, load_definitions(text, "test.yaml"))


def run_synth(runner: CliRunner, persons: int, days: int, seed: int | None = None) -> int:
    """Run `dmp synth`; return a time (ms) just after the data it made, which ends now."""
    args = ["synth", "--persons", str(persons), "--days", str(days)]
    result = runner.invoke(cli, args if seed is None else [*args, "--seed", str(seed)])
    assert result.exit_code == 0, result.output
    return int(time.time() * 1000) + 60_000


# --- rows for the segments package ---------------------------------------------------------

# The columns of the matrix the segment language reads (a part of what build_matrix makes).
MATRIX_SCHEMA = {
    "person_id": pl.Utf8,
    "tier": pl.Utf8,
    "score": pl.Float64,
    "stage": pl.Utf8,
    "interests": pl.List(pl.Struct({"topic": pl.Utf8, "weight": pl.Float64})),
    "channels": pl.List(pl.Utf8),
    "traits": pl.Utf8,
    "touchpoints_30d": pl.UInt32,
    "top_interest": pl.Utf8,
}


@dataclass(frozen=True)
class SegmentsCase:
    """The fifty example segments over synth data, and polars' evaluation of them: what
    every SQL backend's test compares its answer with."""

    trees: dict
    as_of_ms: int
    matrix: pl.DataFrame
    touchpoints: pl.DataFrame
    expected: pl.DataFrame

    def check(self, got: pl.DataFrame) -> None:
        """Assert a backend's table is polars' (the same persons per segment) and that
        the shapes pick people on the synth data."""
        assert_frame_equal(got.sort("person_id"), self.expected.sort("person_id"))
        sizes = self.expected.select(pl.exclude("person_id").sum()).row(0)
        assert sum(1 for s in sizes if s) >= 40


def fifty_segments(runner: CliRunner, r: redis_lib.Redis, config: Config) -> SegmentsCase:
    """Return the fifty example segments over a small synth company, with polars' answer."""
    from dmp.matrix import builds, sources
    from dmp.synth import example_segments
    from segments.definition import parse_definition
    from segments.evaluator import evaluate

    run_synth(runner, 300, 60)
    built = builds.build(r, config)
    trees = {d["id"]: parse_definition(d).where for d in example_segments(50)}
    matrix = pl.read_parquet(built.path)
    touchpoints = sources.read_touchpoints(config.events_dir, sources.merge_map(r=r)).collect()
    expected = evaluate(matrix.lazy(), touchpoints.lazy(), trees, built.as_of_ms).collect()
    return SegmentsCase(trees, built.as_of_ms, matrix, touchpoints, expected)


def profile_row(
    pid: str,
    tier: str = "medium",
    *,
    email: str | None = "x@acme.de",
    contact: Iterable[str] = (),
    consents: Iterable[str] = ("analytics",),
    first_days: float = 100,
    **traits,
) -> dict:
    """Return a person as build_matrix reads them (PERSON_SCHEMA), first seen
    ``first_days`` before MATRIX_NOW."""
    return {
        "person_id": pid,
        "tier": tier,
        "email": email,
        "contact": list(contact),
        "consents": list(consents),
        "traits": json.dumps(traits),
        "first_seen": MATRIX_NOW - round(first_days * DAY_MS),
    }


def touch_row(
    pid: str,
    days_ago: float,
    event: str = "page",
    url: str | None = None,
    topics: Iterable[str] = (),
    channel: str = "web",
) -> dict:
    """Return a touchpoint (TOUCHPOINT_SCHEMA) ``days_ago`` days before MATRIX_NOW."""
    return {
        "person_id": pid,
        "timestamp": MATRIX_NOW - round(days_ago * DAY_MS),
        "event": event,
        "type": "page" if event == "page" else "track",
        "source": "pixel",
        "channel": channel,
        "site_id": "acme",
        "url": url,
        "title": None,
        "topics": list(topics),
        "properties": None,
    }


def matrix_row(pid: str, **columns) -> dict:
    """Return a matrix row (MATRIX_SCHEMA) of a high-tier MQL, overridden by ``columns``."""
    row = {
        "person_id": pid,
        "tier": "high",
        "score": 70.0,
        "stage": "mql",
        "interests": [{"topic": "marketing-automation", "weight": 0.6}],
        "channels": ["retargeting", "email"],
        "traits": '{"country": "DE", "employees": 40}',
        "touchpoints_30d": 3,
        "top_interest": "marketing-automation",
    }
    return {**row, **columns}


def build_rows(
    model: ScoringModel,
    persons: list[dict],
    touches: list[dict],
    history: Iterable[dict] = (),
    catalog: tuple[ContentItem, ...] = (),
    as_of: int = MATRIX_NOW,
) -> tuple[dict[str, dict], pl.DataFrame]:
    """Return the matrix rows by person id and the stage changes build_matrix makes of
    profile, touchpoint and stage history rows."""
    matrix, changes = build_matrix(
        pl.LazyFrame(persons, schema=PERSON_SCHEMA),
        pl.LazyFrame(touches, schema=TOUCHPOINT_SCHEMA),
        pl.LazyFrame(list(history), schema=STAGE_HISTORY_SCHEMA),
        model,
        catalog,
        as_of,
    )
    rows = {r["person_id"]: r for r in matrix.collect().iter_rows(named=True)}
    return rows, changes.collect()


# --- /metrics ------------------------------------------------------------------------------


def scrape(client: FlaskClient) -> str:
    """Return the /metrics text of the app (it must answer 200)."""
    resp = client.get("/metrics")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def read_metric(text: str, name: str, **labels: str) -> float | None:
    """Return the value of the sample ``name`` with exactly these labels in a /metrics
    text, as Prometheus parses it; None if there is no such sample."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None
