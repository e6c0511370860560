"""The marketer UI's pages with 1,000,000 persons in the matrix and 50 segments, beside /healthz.

    python bench/ui.py                                   # 1M persons, 20M touchpoints
    python bench/ui.py --persons 20000 --touchpoints 400000 --rounds 10   # a quick check

The data is the matrix benchmark's (``bench/data/matrix-…``, made by ``bench/matrix.py``
if missing: persons, stage history and a 90-day event log in dmp's layout). Once per
size, a dmp data dir (``bench/data/ui-<persons>-<touchpoints>``) is made from it: the
matrix built as ``dmp matrix build`` builds it (the same pure code; the persons come from
the generated file instead of Redis), the 50 mixed segments of ``dmp.synth`` applied and
run (membership files, lookup sets), the tier counters set, 200 known persons ingested
through the real worker, a site, a user of each role and two file destinations, one of
them synced once.

``dmp serve --no-ingest --workers 1 --threads 2`` serves it. After a login and two warm-up
looks at every page, each round asks every page once in a rotating order, each followed
by ``/healthz`` (the floor: the same server, the same connection, no work). The table
gives each page's median and p95 over the rounds beside /healthz's, and whether the p95
is within the issue's 300 ms. Results go to ``bench/results/ui.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from matrix import AS_OF, data_folder  # noqa: E402  (bench/ is the script's folder)
from pixel import Target, start, stop, stop_redis, wait_up  # noqa: E402
from runlog import append, commit  # noqa: E402

TARGET_MS = 300.0
PASSWORD = "bench password 2026"
ADMIN = "admin@bench.test"


def source_folder(persons: int, touchpoints: int) -> Path:
    """Return the matrix benchmark's data folder, generating it first if missing."""
    folder = data_folder(persons, touchpoints, 7)
    if not (folder / "persons.parquet").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "matrix.py"), "--child", "generate"]
            + ["--data", str(folder), "--persons", str(persons)]
            + ["--touchpoints", str(touchpoints), "--seed", "7"],
            check=True,
        )
    return folder


def prepare(data_dir: Path, source: Path) -> dict:
    """Fill a dmp data dir from the generated data (once); return its sample ids."""
    marker = data_dir / "bench-ui.json"
    if marker.exists():
        return json.loads(marker.read_text())
    from dmp.config import load_config
    from dmp.storage import redisserver

    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "events").exists():
        (data_dir / "events").symlink_to(source / "events")
    config = load_config({"data_dir": data_dir}, env={})
    server = redisserver.attach_embedded(data_dir)
    r = redisserver.connect(server.url)
    started = time.perf_counter()
    rows = build_snapshot(r, config, source)
    print(f"matrix: {rows:,} persons in {time.perf_counter() - started:.0f} s", flush=True)
    sample = fill(r, config, rows)
    marker.write_text(json.dumps(sample))
    r.close()
    redisserver.stop_if_last(server)
    return sample


def build_snapshot(r, config, source: Path) -> int:
    """Build and write the matrix snapshot as a full ``dmp matrix build`` does."""
    from dmp.matrix.snapshots import write_snapshot
    from dmp.matrix.sources import event_files, model_texts, read_touchpoints
    from dmp.synth import catalog_yaml
    from segments.content import parse_catalog
    from segments.funnel import build_funnel
    from segments.matrix import finish_matrix
    from segments.personkey import all_keyed
    from segments.personstate import decay_scale, person_state
    from segments.scoring import parse_model
    from segments.stages import current_stages

    model_text, _ = model_texts(r)
    model, catalog = parse_model(model_text), parse_catalog(catalog_yaml())
    scale = decay_scale(model, AS_OF)
    touchpoints = read_touchpoints(config.events_dir, {})
    persons = pl.scan_parquet(source / "persons.parquet")
    state = person_state(persons, touchpoints, model, catalog, AS_OF, scale).cache()
    history = pl.scan_parquet(source / "history.parquet")
    recorded, keyed = current_stages(history, AS_OF), all_keyed(persons)
    matrix, changes = finish_matrix(state, recorded, model, catalog, AS_OF, keyed=keyed)
    rows, new_stages, states, past = pl.collect_all(
        [matrix, changes, state, history], engine="streaming"
    )
    history_now = pl.concat([past, new_stages])
    funnel = build_funnel(rows, history_now, AS_OF)
    manifest = {"as_of": AS_OF, "files": event_files(config.events_dir), "last_merge": "0-0"}
    write_snapshot(config, rows, AS_OF, funnel, states, history_now, manifest)
    return rows.height


def fill(r, config, persons: int) -> dict:
    """Segments run, counters, known persons, users, a site and destinations; return ids."""
    from dmp.access import sites, users
    from dmp.membership import definitions, runs
    from dmp.storage import keyspace
    from dmp.synth import example_segments
    from exporters import export, settings
    from segments.definition import parse_definition

    definitions.apply_definitions(r, [parse_definition(d) for d in example_segments(50)])
    started = time.perf_counter()
    result = runs.run(r, config, full=True, build_matrix=False)
    print(f"segments: 50 run in {time.perf_counter() - started:.0f} s", flush=True)
    tiers = pl.scan_parquet(latest(config)).group_by("tier").len().collect()
    r.hset(keyspace.STATS, mapping={f"persons:{t}": n for t, n in tiers.iter_rows()})
    r.hset(keyspace.STATS, mapping={"events_aggregate": persons // 3})
    known = ingest_known(r, config, 200)
    for role in users.Role:
        users.add_user(r, f"{role.value}@bench.test", PASSWORD, role, replace=True)
    sites.add_site(r, "Bench GmbH", ["bench.test"])
    by_size = sorted((n, sid) for sid, n in result.members.items() if n)
    smallest, largest = by_size[0][1], by_size[-1][1]
    out = str(config.data_dir / "exports-out")
    for name, segs in (("files-small", [smallest]), ("files-large", [smallest, largest])):
        found = settings.validate(r, name, "file", segs, 3600, {"folder": out})
        settings.save(r, found, replace=True)
    started = time.perf_counter()
    export.run(r, config, "files-small")
    print(f"export: files-small synced in {time.perf_counter() - started:.0f} s", flush=True)
    return {"segment": largest, "small": smallest, "person": known[0], "email": known[1]}


def settle(data_dir: Path) -> None:
    """Make what the pages make on their first look (the overlap of the run, the overview's
    counts, the builder's sample): the rounds time pages as marketers see them after."""
    from dmp.config import load_config
    from dmp.matrix import summary
    from dmp.matrix.snapshots import latest_build
    from dmp.membership import overlaps, previewsample
    from dmp.storage import redisserver

    config = load_config({"data_dir": data_dir}, env={})
    server = redisserver.attach_embedded(data_dir)
    r = redisserver.connect(server.url)
    started = time.perf_counter()
    overlaps.count_overlap(config)
    summary.latest_summary(config, inline_bytes=1 << 40)
    snapshot, manifest = latest_build(config)
    previewsample.write_sample(r, config, snapshot, manifest)
    print(f"settled (overlap, counts, sample) in {time.perf_counter() - started:.0f} s")
    r.close()
    redisserver.stop_if_last(server)


def latest(config) -> Path:
    """Return the latest matrix snapshot."""
    from dmp.matrix.snapshots import latest_build

    return latest_build(config)[0]


def ingest_known(r, config, n: int) -> list[str]:
    """Ingest ``n`` identified persons through the real worker; return one's id and email."""
    import uuid

    from dmp.ingest import stream
    from dmp.ingest.worker import Worker
    from dmp.people.identity import Identifier, IdKind
    from dmp.people.profiles import find_person
    from dmp.records import Hit

    now = int(time.time() * 1000)
    hits = [
        Hit(
            event_id=uuid.uuid4().hex,
            site_id="bench",
            source="api",
            type="identify",
            event="identify",
            received_at=now,
            timestamp=now,
            uid=f"benchuid{i:014d}",
            user_id=f"crm-{i:05d}",
            traits={"email": f"person{i}@bench.test", "company": "Bench GmbH"},
            trusted=True,
        )
        for i in range(n)
    ]
    stream.enqueue(r, hits, {}, atomic=True)
    Worker(r, config).run(once=True)
    email = "person0@bench.test"
    return [find_person(r, Identifier(IdKind.EMAIL, email)) or "", email]


def log_in(base: str) -> requests.Session:
    """Return a session logged in to the UI as the admin."""
    session = requests.Session()
    page = session.get(f"{base}/ui/login", timeout=30).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    token = token or re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert token, "no CSRF token on the login page"
    res = session.post(
        f"{base}/ui/login",
        data={"email": ADMIN, "password": PASSWORD, "csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=30,
    )
    assert res.status_code == 303, f"login answered {res.status_code}"
    page = session.get(f"{base}/ui/", timeout=30).text
    session.headers["X-CSRFToken"] = re.search(r'name="csrf-token" content="([^"]+)"', page)[1]
    return session


def pages(sample: dict) -> dict[str, str]:
    """Return every UI page to time: a label and its path."""
    sid, pid = sample["segment"], sample["person"]
    return {
        "overview": "/ui/",
        "segments": "/ui/segments/",
        "segment (largest)": f"/ui/segments/{sid}",
        "segment versions diff": f"/ui/segments/{sid}/diff",
        "overlap heat map": "/ui/segments/overlap",
        "builder (new)": "/ui/segments/builder/",
        "builder (edit)": f"/ui/segments/builder/{sid}",
        "persons search": f"/ui/persons/?q={sample['email']}",
        "persons: tier=medium": "/ui/persons/?tier=medium",
        "persons: stage=mql, page 3": "/ui/persons/?stage=mql&page=3",
        "persons: seen on email": "/ui/persons/?touched=email",
        "persons: largest segment": f"/ui/persons/?segment={sid}",
        "person": f"/ui/persons/{pid}",
        "destinations": "/ui/destinations/",
        "destination": "/ui/destinations/files-small",
        "destination form (Meta)": "/ui/destinations/new?kind=meta",
        "sites and keys": "/ui/sites/",
        "API keys": "/ui/sites/keys",
        "scoring": "/ui/scoring/",
        "scoring editor": "/ui/scoring/edit",
    }


class FormFields(HTMLParser):
    """The fields a browser would send of the form with id ``form_id``."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.fields = form_id, False, []
        self.select: str | None = None
        self.area: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note the form's inputs, selected options and text areas."""
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        elif not self.inside or "name" not in a and tag != "option":
            return
        elif tag == "input" and (a.get("type") not in ("checkbox", "radio") or "checked" in a):
            self.fields.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self.select = a["name"]
        elif tag == "option" and self.select and "selected" in a:
            self.fields.append((self.select, a.get("value", "")))
        elif tag == "textarea":
            self.area = a["name"]

    def handle_endtag(self, tag: str) -> None:
        """Leave selects and text areas."""
        if tag == "select":
            self.select = None
        elif tag == "textarea":
            self.area = None

    def handle_data(self, data: str) -> None:
        """Keep a text area's text."""
        if self.area:
            self.fields.append((self.area, data))
            self.area = None


def builder_fields(session: requests.Session, base: str, sid: str) -> list[tuple[str, str]]:
    """Return what the builder's form of segment ``sid`` sends (as htmx does)."""
    parser = FormFields("builder")
    parser.feed(session.get(f"{base}/ui/segments/builder/{sid}", timeout=60).text)
    return parser.fields


def timed_post(session: requests.Session, url: str, data: list) -> tuple[float, int]:
    """Return (ms, status) of one htmx-like POST with the session's CSRF token."""
    headers = {"X-CSRFToken": session.headers.get("X-CSRFToken", ""), "HX-Request": "true"}
    started = time.perf_counter()
    res = session.post(url, data=data, headers=headers, allow_redirects=False, timeout=60)
    _ = res.content
    return (time.perf_counter() - started) * 1000, res.status_code


def timed_get(session: requests.Session, url: str) -> tuple[float, int]:
    """Return (ms, status) of one GET, the body read to its end."""
    started = time.perf_counter()
    res = session.get(url, allow_redirects=False, timeout=60)
    _ = res.content
    return (time.perf_counter() - started) * 1000, res.status_code


def p95(values: list[float]) -> float:
    """Return the 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def measure(base: str, paths: dict[str, str], rounds: int) -> dict[str, dict]:
    """Time every page, the builder's live answers and /healthz over ``rounds`` rounds;
    return figures per label."""
    from dmp.synth import example_segments

    session = log_in(base)
    live = ("builder: check", "builder: preview", "builder: plan")
    times: dict[str, list[float]] = {label: [] for label in [*paths, *live, "/healthz"]}
    statuses: dict[str, int] = {}
    for _ in range(2):
        for label, path in paths.items():
            statuses[label] = timed_get(session, base + path)[1]
    labels = list(paths)
    sids = [d["id"] for d in example_segments(50)]
    for n in range(rounds):
        for label in labels[n % len(labels) :] + labels[: n % len(labels)]:
            ms, statuses[label] = timed_get(session, base + paths[label])
            times[label].append(ms)
            times["/healthz"].append(timed_get(session, base + "/healthz")[0])
        # A definition not asked about before (each round another segment's): the answer
        # a marketer gets while editing, not a cached one.
        fields = builder_fields(session, base, sids[n % len(sids)])
        for label in live:
            url = f"{base}/ui/segments/builder/{label.split(': ')[1]}"
            ms, statuses[label] = timed_post(session, url, fields)
            times[label].append(ms)
    return {
        label: {
            "median_ms": statistics.median(values),
            "p95_ms": p95(values),
            "status": statuses.get(label, 200),
        }
        for label, values in times.items()
    }


def table(figures: dict[str, dict]) -> str:
    """Return the figures as a Markdown table, /healthz first."""
    floor = figures["/healthz"]
    lines = [
        "| page | median ms | p95 ms | p95 × /healthz | ≤ 300 ms | status |",
        "|---|---:|---:|---:|:---:|---:|",
    ]
    for label in ["/healthz", *[k for k in figures if k != "/healthz"]]:
        f = figures[label]
        ok = "yes" if f["p95_ms"] <= TARGET_MS and f["status"] in (200, 303) else "**no**"
        lines.append(
            f"| {label} | {f['median_ms']:.1f} | {f['p95_ms']:.1f} | "
            f"{f['p95_ms'] / floor['p95_ms']:.1f} | {ok} | {f['status']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--touchpoints", type=int, default=20_000_000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    source = source_folder(args.persons, args.touchpoints)
    data_dir = ROOT / "bench" / "data" / f"ui-{args.persons}-{args.touchpoints}"
    sample = prepare(data_dir, source)
    settle(data_dir)
    target = Target("dmp", [sys.executable, "-m", "dmp", "serve", "--no-ingest"], data_dir)
    target.cmd += ["--workers", "1", "--threads", "2"]
    start(target, {"PATH": str(Path(sys.executable).parent), "HOME": str(Path.home())})
    try:
        wait_up(target, "/healthz")
        figures = measure(target.url, pages(sample), args.rounds)
    finally:
        stop(target)
        stop_redis(target)
    print(f"\n{args.persons:,} persons, 50 segments, {args.rounds} rounds\n")
    print(table(figures))
    append(
        "ui",
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "host": platform.node(),
            "persons": args.persons,
            "rounds": args.rounds,
            "figures": figures,
        },
    )


if __name__ == "__main__":
    main()
