"""Exporters: payload speed per core, and a whole segment synced end to end.

    python bench/exports.py encode [--rows 200000] [--rounds 5]
    python bench/exports.py sync [--members 100000,1000000]

``encode``: normalise + hash + serialise, on one core, for Meta's multi-key payload
(``exporters.meta``: encode, then the ``payload`` JSON of each 10,000-row request) and
Google's Data Manager members (``exporters.google``: encode, then the ``audienceMembers``
JSON), over email-only contacts whose emails dmp keeps normalised. Beside them, in the
same rounds, the ceiling: a bare loop of ``hashlib.sha256(email).hexdigest()`` over the
same emails as bytes. Targets: ≥ 0.5 of the bare loop and ≥ 500,000 rows/s.

``sync``: a segment of N members (profiles with ``ads`` consent for their email written
straight into a fresh embedded Redis, a members file and a run manifest), synced by a
child process (``exporters.export.run``) to Meta's contract server (tests/, on loopback
in this process) and to the file destination (CSV). Reported: rows/s and the child's
peak RSS beside a child that only imports and connects (the floor); target: memory
independent of N (streamed in batches).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from runlog import append, commit, measure_child  # noqa: E402

from dmp.membership.audience import Contact  # noqa: E402
from exporters import google, googlerows, meta, metarows  # noqa: E402
from exporters.destination import Settings  # noqa: E402

TOKEN = "bench-token"
AUDIENCE = "7001"


def emails(n: int) -> list[str]:
    """Return ``n`` distinct normalised emails."""
    return [f"person.{i:07d}@firma-{i % 977}.de" for i in range(n)]


def timed(fn) -> float:
    """Return the seconds one call of ``fn`` takes."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def encode_round(contacts: list[Contact], raw: list[bytes]) -> dict[str, float]:
    """Return the seconds of the bare loop, Meta's and Google's payloads over the rows."""
    sha = hashlib.sha256
    m = meta.MetaAudience(Settings("m", "meta", ("s",), options={"audience.s": AUDIENCE}))
    os.environ["BENCH_GOOGLE_TOKEN"] = TOKEN
    g_options = {"audience.s": "1", "operating_account_id": "1", "token_env": "BENCH_GOOGLE_TOKEN"}
    g = google.GoogleCustomerMatch(Settings("g", "google", ("s",), options=g_options))

    def meta_payloads() -> None:
        for at in range(0, len(contacts), meta.MAX_ROWS):
            metarows.payload_json(m.encode(contacts[at : at + meta.MAX_ROWS]))

    def google_payloads() -> None:
        for at in range(0, len(contacts), 10_000):
            googlerows.members_json(g.encode(contacts[at : at + 10_000]), True)

    return {
        "bare_sha256": timed(lambda: [sha(e).hexdigest() for e in raw]),
        "meta": timed(meta_payloads),
        "google": timed(google_payloads),
    }


def bench_encode(rows: int, rounds: int) -> dict:
    """Run the payload rounds; return medians and ratios."""
    found = emails(rows)
    # As read_contacts makes them for persons known by their email alone.
    contacts = [Contact(f"{i:016x}", e, details=False) for i, e in enumerate(found)]
    raw = [e.encode() for e in found]
    runs = [encode_round(contacts, raw) for _ in range(rounds)]
    out: dict = {"rows": rows, "rounds": rounds}
    for name in ("bare_sha256", "meta", "google"):
        seconds = statistics.median(r[name] for r in runs)
        out[name] = {"rows_per_s": round(rows / seconds), "seconds": round(seconds, 4)}
    for name in ("meta", "google"):
        ratios = [r["bare_sha256"] / r[name] for r in runs]
        out[name]["of_bare"] = round(statistics.median(ratios), 3)
    return out


def fill(data_dir: Path, members: int) -> str:
    """Write ``members`` consented profiles, a members file and a run; return Redis's URL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dmp.storage import keyspace, redisserver

    server = redisserver.attach_embedded(data_dir / "redis", stop_at_exit=False)
    r = redisserver.connect(server.url)
    now = int(time.time() * 1000)
    pids = [f"{i:016x}" for i in range(members)]
    for at in range(0, members, 20_000):
        pipe = r.pipeline(transaction=False)
        for i in range(at, min(at + 20_000, members)):
            email = f"person.{i:07d}@firma-{i % 977}.de"
            fields = {"tier": "medium", "email": email, f"c|ads|email:{email}": f"1:{now}"}
            pipe.hset(keyspace.person(pids[i]), mapping=fields)
        pipe.execute()
    r.sadd(keyspace.SEGMENTS, "bench")
    folder = data_dir / "segments"
    folder.mkdir(parents=True, exist_ok=True)
    run_id = "20261129T000000000Z-000000001"
    table = pa.table({"segment_id": ["bench"] * members, "person_id": pids})
    pq.write_table(table, folder / f"members-{run_id}.parquet", row_group_size=100_000)
    manifest = {"run_id": run_id, "as_of": now, "members_file": f"members-{run_id}.parquet"}
    manifest["members"] = {"bench": members}
    (folder / f"run-{run_id}.json").write_text(json.dumps(manifest))
    (folder / "LATEST").write_text(f"run-{run_id}.json\n")
    return server.url


def child(kind: str, data_dir: str, redis_url: str, url: str) -> None:
    """Sync the bench segment to one destination; print a JSON report (the child's job)."""
    from dmp.config import load_config
    from dmp.storage import redisserver
    from exporters import export, settings

    config = load_config({"data_dir": data_dir, "redis_url": redis_url}, env={})
    r = redisserver.connect(redis_url)
    if kind == "floor":
        r.ping()
        print(json.dumps({"seconds": 0.0, "rows": 0, "hwm_mb": _hwm_mb()}))
        return
    options = (
        {"base_url": url, "token_env": "BENCH_META_TOKEN", "audience.bench": AUDIENCE}
        if kind == "meta"
        else {"folder": str(Path(data_dir) / "files"), "format": "csv"}
    )
    name = f"bench-{kind}"
    settings.save(r, settings.validate(r, name, kind, ["bench"], 900, options), replace=True)
    started = time.perf_counter()
    report = export.run(r, config, name)
    seconds = time.perf_counter() - started
    part = report.segments[0]
    assert part.status == "ok", report.as_dict()
    print(json.dumps({"seconds": seconds, "rows": part.added, "hwm_mb": _hwm_mb()}))


def _hwm_mb() -> float:
    """Return this process's peak RSS (VmHWM: of this program alone; ``ru_maxrss`` of a
    child counts the parent's pages it was forked with, before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_sync(sizes: list[int]) -> list[dict]:
    """Sync each size to Meta's contract server and to files; return the figures."""
    from tests.exporters.contracts.meta import MetaGraph
    from tests.exporters.contracts.server import ContractServer

    out = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="dmp-bench-exports-") as tmp:
            data = Path(tmp)
            started = time.perf_counter()
            url = fill(data, size)
            filled = time.perf_counter() - started
            graph = MetaGraph(TOKEN)
            graph.create_audience(AUDIENCE, "bench")
            os.environ["BENCH_META_TOKEN"] = TOKEN
            with ContractServer(graph.app()) as server:
                row = {"members": size, "fill_s": round(filled, 1)}
                for kind in ("floor", "meta", "file"):
                    args = [sys.executable, __file__, "child", kind, str(data), url, server.url]
                    got = measure_child(args, f"exports-{kind}")
                    row[kind] = {
                        "rows_per_s": round(got["rows"] / got["seconds"]) if got["rows"] else 0,
                        "seconds": round(got["seconds"], 2),
                        "peak_rss_mb": round(got["hwm_mb"], 1),
                    }
                assert len(graph.members(AUDIENCE, ("EMAIL",))) == size
            _stop_redis(data)
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def _stop_redis(data: Path) -> None:
    from dmp.storage import redisserver

    try:
        redisserver.connect(redisserver.locate_server(data / "redis").url).shutdown(nosave=True)
    except Exception:  # noqa: BLE001 (gone already: fine)
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    enc = sub.add_parser("encode")
    enc.add_argument("--rows", type=int, default=200_000)
    enc.add_argument("--rounds", type=int, default=5)
    syn = sub.add_parser("sync")
    syn.add_argument("--members", default="100000,1000000")
    kid = sub.add_parser("child")
    kid.add_argument("kind")
    kid.add_argument("data_dir")
    kid.add_argument("redis_url")
    kid.add_argument("url")
    args = parser.parse_args()
    if args.what == "child":
        child(args.kind, args.data_dir, args.redis_url, args.url)
        return
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }
    if args.what == "encode":
        record["encode"] = bench_encode(args.rows, args.rounds)
    else:
        record["sync"] = bench_sync([int(x) for x in args.members.split(",")])
    append("exports", record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
