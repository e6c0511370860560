"""Incremental matrix build against a full build, after a share of persons got new touchpoints.

    python bench/incremental.py                       # 1M persons, 20M touchpoints, 1 %, 3 runs
    python bench/incremental.py --persons 20000 --touchpoints 400000 --runs 1   # a quick check

Starts from ``bench/matrix.py``'s generated data (made if missing), as of its ``AS_OF``:
the last build's rows, state and stage history are made once and kept (untimed), as
``dmp matrix build`` keeps them in its snapshot. Then ``--share`` of the persons (every
n-th) get ``--each`` new touchpoints in a new event file of the next day, and the matrix
is built as of 12:00 that day twice, each in a fresh process, in turn:

- **full**: every person folded from all touchpoints (``segments.personstate``), then
  finished (``segments.matrix.finish_matrix``);
- **incremental**: the persons of the new file folded again from all their touchpoints
  and finished, everyone else's kept row refreshed to the new as-of time
  (``dmp.matrix.builds.refold``, what an incremental ``dmp matrix build`` runs).

Each writes the rows and its person state as Parquet, as a build's snapshot does (the
incremental build only the refolded persons' state: a part beside the kept one). The
two outputs must hold the same rows, equal column by column.

A third process measures the **floor** of any build that rewrites the snapshot's rows,
however few persons it refolds: the kept rows read whole, the new
persons' rows merged in (``merge_sorted``, as the incremental build merges them) and
every row written. The time and the peak RSS of each process go to
``bench/results/incremental.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from matrix import AS_OF, data_folder  # noqa: E402  (bench/ is the script's folder)
from runlog import append, commit, measure_child  # noqa: E402

from dmp.matrix.builds import Kept, merge_sorted, refold  # noqa: E402
from dmp.matrix.snapshots import ROW_GROUP_ROWS  # noqa: E402
from dmp.matrix.sources import persons_since, read_touchpoints  # noqa: E402
from dmp.records import EVENT_SCHEMA  # noqa: E402
from dmp.storage.parquetfiles import write_parquet_files  # noqa: E402
from dmp.synth import catalog_yaml  # noqa: E402
from segments.content import parse_catalog  # noqa: E402
from segments.matrix import finish_matrix  # noqa: E402
from segments.personkey import all_keyed  # noqa: E402
from segments.personstate import decay_scale, person_state  # noqa: E402
from segments.scoring import DAY_MS, default_model_text, parse_model  # noqa: E402
from segments.stages import current_stages  # noqa: E402

NEXT_DAY = (AS_OF // DAY_MS + 1) * DAY_MS  # the new events' day starts here
AS_OF_NOW = NEXT_DAY + DAY_MS // 2  # the builds' as-of time: noon of that day


def scoring(as_of: int) -> tuple:
    model = parse_model(default_model_text())
    return model, parse_catalog(catalog_yaml()), as_of, decay_scale(model, as_of)


def prepare(data: Path, work: Path, share: float, each: int) -> None:
    """Keep the last build's state and history (as of AS_OF) and write the new day's
    events; the event log is the generated one (its day folders linked) plus that day."""
    events = work / "events"
    events.mkdir(parents=True, exist_ok=True)
    for day in sorted((data / "events").iterdir()):
        link = events / day.name
        if not link.exists():
            link.symlink_to(day.resolve(), target_is_directory=True)
    model, catalog, _, scale = scoring(AS_OF)
    persons = pl.scan_parquet(data / "persons.parquet")
    state = person_state(
        persons, read_touchpoints(data / "events", {}), model, catalog, AS_OF, scale
    )
    state = state.collect(engine="streaming")
    state.write_parquet(work / "state.parquet")
    history = pl.read_parquet(data / "history.parquet")
    history.write_parquet(work / "history.parquet")
    recorded = current_stages(history.lazy(), AS_OF)
    rows, _ = finish_matrix(state.lazy(), recorded, model, catalog, AS_OF)
    rows.collect(engine="streaming").write_parquet(work / "rows.parquet")
    ids = persons.select("person_id").collect()["person_id"]
    every = max(1, round(1 / share))
    chosen = ids.gather_every(every)
    n = chosen.len() * each
    schema = pl.from_arrow(EVENT_SCHEMA.empty_table()).schema  # type: ignore[union-attr]
    ms = pl.int_range(0, n, eager=True) * (DAY_MS // 2 // n) + NEXT_DAY
    person = chosen.to_frame().select(pl.col("person_id").repeat_by(each).explode())
    new = person.with_columns(
        event_id=pl.format("new{}", pl.int_range(0, n)),
        site_id=pl.lit("acme-software"),
        source=pl.lit("pixel"),
        type=pl.lit("page"),
        event=pl.lit("page"),
        channel=pl.lit("web"),
        url=pl.lit("https://www.acme-software.example/pricing"),
        topics=pl.lit(["pricing"]),
        timestamp=ms.cast(pl.Datetime("ms", "UTC")),
        received_at=ms.cast(pl.Datetime("ms", "UTC")),
    )
    new = new.with_columns(pl.lit(None).alias(c) for c in schema if c not in new.columns)
    day = datetime.fromtimestamp(NEXT_DAY / 1000, UTC).strftime("%Y-%m-%d")
    path = events / f"dt={day}" / "part-new.parquet"
    path.parent.mkdir(exist_ok=True)
    new.select(list(schema)).cast(dict(schema)).sort("timestamp").write_parquet(path)  # type: ignore[arg-type]
    (work / "ready.json").write_text(json.dumps({"persons": chosen.len(), "events": n}))


def run(kind: str, data: Path, work: Path) -> None:
    """Child process: one build as of AS_OF_NOW, rows and state written (or the floor)."""
    if kind == "floor":
        _floor(work)
        return
    started = time.perf_counter()
    model, catalog, as_of, scale = scoring(AS_OF_NOW)
    touchpoints = read_touchpoints(work / "events", {})
    persons = pl.scan_parquet(data / "persons.parquet")
    history = pl.scan_parquet(work / "history.parquet")
    if kind == "full":
        state = person_state(persons, touchpoints, model, catalog, as_of, scale).cache()
        recorded = current_stages(history, as_of)
        keyed = all_keyed(persons)  # as dmp.matrix.builds does: rows sorted by key
        matrix, _ = finish_matrix(state, recorded, model, catalog, as_of, keyed=keyed)
        rows, states = pl.collect_all([matrix, state], engine="streaming")
        refolded = None
    else:
        old = [f.relative_to(work / "events").as_posix() for f in _files(work, new=False)]
        now = [f.relative_to(work / "events").as_posix() for f in _files(work, new=True)]
        touched = set(persons_since(work / "events", old, now, AS_OF))
        fresh = persons.filter(pl.col("person_id").is_in(sorted(touched)))
        kept = Kept(
            pl.scan_parquet(work / "rows.parquet"),
            pl.scan_parquet(work / "state.parquet"),
            history,
        )
        rows, _, states, _, _ = refold(
            kept,
            (fresh, history.filter(pl.col("person_id").is_in(sorted(touched)))),
            touchpoints,
            touched,
            set(),
            (model, catalog, as_of, scale),
        )
        refolded = len(touched)
    out = work / f"out-{kind}.parquet"
    write_parquet_files([rows, states], [out, work / f"state-{kind}.parquet"], ROW_GROUP_ROWS)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "out": str(out), "refolded": refolded}))


def _floor(work: Path) -> None:
    """Child process: what any build that rewrites the snapshot's rows pays however
    little it refolds: the kept rows read whole, the refolded persons' rows merged in
    (here the kept rows of those persons, as ``refold`` merges its new rows) and
    everyone's rows written. No as-of column computed, no state read. Like the other
    kinds' times, it leaves out the process's start and imports."""
    started = time.perf_counter()
    rows = pl.read_parquet(work / "rows.parquet")
    new = [f for f in _files(work, new=True) if f.name == "part-new.parquet"]
    chosen = pl.scan_parquet(new).select(pl.col("person_id").unique()).collect()["person_id"]
    mine = pl.col("person_id").is_in(chosen.implode())
    rows = merge_sorted(rows.filter(~mine), rows.filter(mine))
    out = work / "out-floor.parquet"
    write_parquet_files([rows], [out], ROW_GROUP_ROWS)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "out": str(out), "refolded": len(chosen)}))


def _files(work: Path, *, new: bool) -> list[Path]:
    found = sorted((work / "events").glob("dt=*/part-*.parquet"))
    return found if new else [f for f in found if f.name != "part-new.parquet"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--touchpoints", type=int, default=20_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--share", type=float, default=0.01, help="persons with new touchpoints")
    parser.add_argument("--each", type=int, default=5, help="new touchpoints per such person")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = data_folder(args.persons, args.touchpoints, args.seed)
    work = data.with_name(f"incremental-{data.name}-{args.share}-{args.each}")
    if args.child == "prepare":
        prepare(data, work, args.share, args.each)
        return
    if args.child:
        run(args.child, data, work)
        return
    size = ["--persons", str(args.persons), "--touchpoints", str(args.touchpoints)]
    size += ["--seed", str(args.seed)]
    if not (data / "persons.parquet").exists():
        matrix = [sys.executable, str(ROOT / "bench" / "matrix.py"), "--child", "generate"]
        subprocess.run([*matrix, "--data", str(data), *size], check=True)
    base = [sys.executable, __file__, *size, "--share", str(args.share), "--each", str(args.each)]
    if not (work / "ready.json").exists() or not (work / "rows.parquet").exists():
        # In its own process: a child's peak RSS counts its parent's at the fork.
        started = time.perf_counter()
        subprocess.run([*base, "--child", "prepare"], check=True)
        print(
            f"kept the last build's state, wrote the new day: {time.perf_counter() - started:.0f} s"
        )
    new = json.loads((work / "ready.json").read_text())
    kinds = ["full", "incremental", "floor"]
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    for round_ in range(args.runs):
        for kind in kinds[round_ % 3 :] + kinds[: round_ % 3]:  # each kind first in turn
            report = measure_child([*base, "--child", kind], kind)
            results[kind].append(report)
            print(
                f"run {round_ + 1} {kind:<12} {report['seconds']:6.1f} s  "
                f"peak RSS {report['peak_rss_mb']:7,.0f} MB",
                flush=True,
            )
    full = pl.read_parquet(work / "out-full.parquet")
    incremental = pl.read_parquet(work / "out-incremental.parquet")
    same = full.equals(incremental)
    # The floor merged the kept rows back into themselves: all of them, in their order.
    floor_whole = pl.read_parquet(work / "out-floor.parquet").equals(
        pl.read_parquet(work / "rows.parquet")
    )
    t_full = statistics.median(r["seconds"] for r in results["full"])
    t_inc = statistics.median(r["seconds"] for r in results["incremental"])
    m_full = statistics.median(r["peak_rss_mb"] for r in results["full"])
    m_inc = statistics.median(r["peak_rss_mb"] for r in results["incremental"])
    t_floor = statistics.median(r["seconds"] for r in results["floor"])
    print(
        f"\n{args.persons:,} persons, {args.touchpoints:,} touchpoints; {new['persons']:,} persons "
        f"with {new['events']:,} new touchpoints; {args.runs} runs, {os.cpu_count()} cores"
    )
    print(f"full         {t_full:7.1f} s  {m_full:7,.0f} MB")
    print(f"incremental  {t_inc:7.1f} s  {m_inc:7,.0f} MB   {t_inc / t_full:.2f}× full (≤ 0.1×)")
    print(
        f"floor        {t_floor:7.1f} s  {'':>10}   {t_floor / t_full:.2f}× full "
        "(the rows read, merged and written)"
    )
    print(f"the same rows: {same}; the floor kept every row: {floor_whole}")
    append(
        "incremental",
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "host": platform.node(),
            "persons": args.persons,
            "touchpoints": args.touchpoints,
            "new": new,
            "same": same,
            "floor_whole": floor_whole,
            "ratio": round(t_inc / t_full, 3),
            "floor_ratio": round(t_floor / t_full, 3),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
