"""The pull API's members endpoint: 1M members streamed as CSV and as Parquet on loopback.

    python bench/audiences.py [--members 1000000] [--rounds 3] [--kind uid]

A fresh data dir gets ``--members`` persons written straight into its embedded Redis
(a cookie id and an email each; nine in ten with the ``ads`` consent for both), one
segment run's files naming them all as members of one audience (a members file, a
manifest, LATEST), and a partner key sharing it. ``dmp serve --no-ingest`` serves it;
each round asks ``GET /api/v1/audiences/bench/members?limit=1000000`` once per format
over loopback HTTP and reads the body to its end (counting CSV lines; the Parquet file's
row count is read after the clock stops).

The baseline, in the same rounds: the same rows read straight from Redis in this process
through ``read_contacts`` (the audience's person ids from the members file, a chunk at a
time, as the endpoint does) with no HTTP, encoding or cursor. The ratios are the
endpoint's rows/s over the baseline's in the same round (then their median), in wall
time and per CPU-second (the server's processes against this one; Redis's CPU is in
neither). Each round checks that every answer has the baseline's rows; the end prints
the largest peak resident size among the server's processes.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pixel import Target, start, stop, stop_redis, wait_up  # noqa: E402
from runlog import append, commit  # noqa: E402

from dmp.access import apikeys  # noqa: E402
from dmp.membership.audience import member_ids, read_contacts  # noqa: E402
from dmp.people import consents  # noqa: E402
from dmp.people.identity import Identifier, IdKind, email_sha256  # noqa: E402
from dmp.records import Category  # noqa: E402
from dmp.storage import keyspace, redisserver  # noqa: E402
from dmp.storage.parquetfiles import write_parquet_files, write_text  # noqa: E402

AUDIENCE = "bench"
RUN_ID = "20261201T000000000Z-000000001"
AS_OF = 1_795_996_800_000  # 2026-12-01T00:00:00Z
BATCH = 10_000  # persons per pipeline while filling Redis


def fill_redis(r, members: int) -> None:
    """Write ``members`` persons: a cookie and an email, nine in ten with ads for both."""
    granted = consents.state_value(True, AS_OF)
    for start_at in range(0, members, BATCH):
        pipe = r.pipeline(transaction=False)
        for i in range(start_at, min(members, start_at + BATCH)):
            pid, uid, email = f"p{i:08d}", f"u{i:08d}-bench-cookie", f"person{i}@acme.example"
            uid_id, email_id = Identifier(IdKind.UID, uid), Identifier(IdKind.EMAIL, email)
            profile = {"tier": "medium", "email": email}
            if i % 10:
                profile[consents.state_field(Category.ADS.value, uid_id)] = granted
                profile[consents.state_field(Category.ADS.value, email_id)] = granted
            pipe.hset(keyspace.person(pid), mapping=profile)
            pipe.sadd(keyspace.person(pid, "identifiers"), uid_id.text, email_id.text)
        pipe.execute()


def write_run(data_dir: Path, members: int) -> Path:
    """Write a segment run's members file, manifest and LATEST; return the members file."""
    folder = data_dir / "segments"
    folder.mkdir(parents=True, exist_ok=True)
    pids = [f"p{i:08d}" for i in range(members)]
    table = pa.table({"segment_id": [AUDIENCE] * members, "person_id": pids})
    path = folder / f"members-{RUN_ID}.parquet"
    write_parquet_files([table], [path])
    manifest = {
        "run_id": RUN_ID,
        "as_of": AS_OF,
        "members": {AUDIENCE: members},
        "members_file": path.name,
    }
    write_text(folder / f"run-{RUN_ID}.json", json.dumps(manifest))
    write_text(folder / "LATEST", f"run-{RUN_ID}.json\n")
    return path


def family(pid: int) -> list[int]:
    """Return a process and its descendants (dmp serve, gunicorn's master, its web process)."""
    out, todo = [], [pid]
    while todo:
        one = todo.pop()
        out.append(one)
        try:
            for task in Path(f"/proc/{one}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # ended meanwhile
            continue
    return out


def server_cpu(pid: int) -> float:
    """Return the CPU seconds (user and system) a server has used so far."""
    total = 0.0
    for one in family(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def server_peak_mb(pid: int) -> float:
    """Return the largest peak resident size (VmHWM) among a server's processes, in MB."""
    peaks = [0.0]
    for one in family(pid):
        try:
            status = Path(f"/proc/{one}/status").read_text()
        except FileNotFoundError:
            continue
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if "VmHWM" in line]
    return max(peaks)


def baseline(r, path: Path, kind: str) -> dict:
    """Return rows, seconds and CPU seconds of reading the audience straight through
    read_contacts."""
    started, cpu, rows = time.perf_counter(), time.process_time(), 0
    for pids in member_ids(path, AUDIENCE):
        contacts = read_contacts(r, pids, Category.ADS)
        if kind == "uid":
            rows += sum(len(c.uids) for c in contacts)
        else:
            rows += len([email_sha256(c.email) for c in contacts if c.email])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"rows": rows, "seconds": seconds, "cpu": cpu}


def fetch(target: Target, key: str, fmt: str, kind: str, members: int) -> dict:
    """Return rows, bytes, seconds and the server's CPU seconds of one members request
    read to its end."""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=600)
    path = f"/api/v1/audiences/{AUDIENCE}/members?format={fmt}&id={kind}&limit={members}"
    cpu = server_cpu(target.proc.pid)
    started = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
    res = conn.getresponse()
    if res.status != 200:
        raise SystemExit(f"{fmt}: {res.status} {res.read()[:500]!r}")
    size, lines, kept = 0, 0, []
    while piece := res.read(1 << 20):
        size += len(piece)
        if fmt == "csv":
            lines += piece.count(b"\n")
        else:
            kept.append(piece)
    seconds = time.perf_counter() - started
    cpu = server_cpu(target.proc.pid) - cpu
    conn.close()
    if fmt == "csv":
        rows = lines - 1  # the header
    else:
        rows = pq.ParquetFile(io.BytesIO(b"".join(kept))).metadata.num_rows
    return {"rows": rows, "bytes": size, "seconds": seconds, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kind", choices=("uid", "email_sha256"), default="uid")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="dmp-audiences-"))
    server = redisserver.attach_embedded(data_dir, stop_at_exit=False)
    r = redisserver.connect(server.url, timeout=60)
    started = time.perf_counter()
    fill_redis(r, args.members)
    path = write_run(data_dir, args.members)
    key = apikeys.create_key(r, apikeys.Scope.PARTNER, "bench", (AUDIENCE,))
    print(f"{args.members:,} members written in {time.perf_counter() - started:.1f} s")
    cmd = [sys.executable, "-m", "dmp", "serve", "--workers", "1", "--threads", "2"]
    target = Target("dmp", [*cmd, "--no-ingest"], data_dir)
    env = {k: v for k, v in os.environ.items() if k.startswith("DMP_") and k != "DMP_DATA_DIR"}
    start(target, {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env})
    rounds: list[dict] = []
    try:
        wait_up(target, "/healthz")
        for rnd in range(args.rounds):
            found = {"baseline": baseline(r, path, args.kind)}
            for fmt in ("csv", "parquet")[rnd % 2 :] + ("csv", "parquet")[: rnd % 2]:
                found[fmt] = fetch(target, key, fmt, args.kind, args.members)
            for name, one in found.items():
                if one["rows"] != found["baseline"]["rows"]:
                    raise SystemExit(f"{name}: {one['rows']} rows, baseline {found['baseline']}")
                print(
                    f"round {rnd + 1} {name:<8} {one['rows'] / one['seconds']:>9,.0f} rows/s"
                    f" {one['rows'] / one['cpu']:>9,.0f} rows/CPU-s"
                    f"  ({one['rows']:,} rows in {one['seconds']:.2f} s, {one['cpu']:.2f} CPU-s"
                    + (f", {one['bytes'] / 1e6:.1f} MB)" if "bytes" in one else ")"),
                    flush=True,
                )
            rounds.append(found)
        peak = server_peak_mb(target.proc.pid)
        print(f"largest peak RSS of the server's processes: {peak:.0f} MB")
    finally:
        stop(target)
        r.close()
        stop_redis(target)
    report(args, rounds)


def report(args: argparse.Namespace, rounds: list[dict]) -> None:
    """Print the medians and ratios (each round's, against its own baseline); append the
    raw rounds to bench/results."""
    print(f"\nmedians of {len(rounds)} rounds, id={args.kind} (ratios: per round, then median)")
    for name in ("baseline", "csv", "parquet"):
        rate = [rnd[name]["rows"] / rnd[name]["seconds"] for rnd in rounds]
        per_cpu = [rnd[name]["rows"] / rnd[name]["cpu"] for rnd in rounds]
        ratio = [rnd["baseline"]["seconds"] / rnd[name]["seconds"] for rnd in rounds]
        cpu_ratio = [rnd["baseline"]["cpu"] / rnd[name]["cpu"] for rnd in rounds]
        print(
            f"{name:<8} {statistics.median(rate):>9,.0f} rows/s"
            f" ({statistics.median(ratio):.2f}x the baseline)"
            f" {statistics.median(per_cpu):>9,.0f} rows/CPU-s"
            f" ({statistics.median(cpu_ratio):.2f}x)"
        )
    append(
        "audiences",
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "host": platform.node(),
            "members": args.members,
            "kind": args.kind,
            "rounds": rounds,
        },
    )


if __name__ == "__main__":
    main()
