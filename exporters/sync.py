"""The sync engine: each destination converges to exactly the audience it should hold.

Per destination and segment, dmp keeps what the destination *holds* (the rows it
acknowledged, ``exporters.holdings``) and works out what it *should* hold: the members
of the latest segment run who hold the destination's channel consent for an identifier
it can match on (``dmp.membership.audience``: erased persons are gone, unsubscribed
ones have withdrawn). A sync:

1. folds in what an interrupted sync had acknowledged (see 5);
2. streams the difference (``exporters.plans``) into a *plan*: removes, then adds (or,
   for a full refresh on a platform that replaces, one replace session), written to
   Parquet before anything is sent;
3. sends the plan in batches; after each acknowledged batch it checkpoints, in one
   Redis transaction, the batch number and the rows the platform refused;
4. folds the acknowledged rows (less the refused ones) into a new holding, renames it
   into place and clears the plan;
5. a crash or a stop between batches leaves the plan and its checkpoint: the next sync
   folds the acknowledged part in and plans afresh, so no acknowledged batch is sent
   again and no change is skipped. (The one batch in flight at a crash, sent but not
   yet checkpointed, is sent again: adds and removes are idempotent on every platform.)

Refused rows are not held, so the next sync tries them again. A platform that stays
down (``Unavailable``) or refuses the request (``Refused``) stops the segment's sync;
the plan waits for the next schedule.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from dmp.config import Config
from dmp.membership import audience
from dmp.membership.results import latest_run
from dmp.storage import exportfiles, keyspace, locks
from exporters import holdings, plans, reports, unsubscribes
from exporters.destination import Batch, Destination, ExportError, Op, Settings, Snapshotting
from exporters.holdings import Entry
from exporters.reports import SegmentReport, Status

log = logging.getLogger(__name__)
TARGET_OPTIONS = ("audience", "list", "group", "tag")  # option prefixes naming a segment's target


class Interrupted(ExportError):  # noqa: N818
    """The sync was asked to stop, or lost its lock, between batches."""


@dataclass(slots=True)
class SegmentSync:
    """One destination's sync of one segment."""

    r: redis.Redis
    config: Config
    dest: Destination
    settings: Settings
    segment: str
    lease: locks.Lease | None = None
    stop: threading.Event | None = None
    progress: Callable[[int, int], None] | None = None  # (rows just sent, rows in the plan)
    _planned: int = 0

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def folder(self) -> Path:
        return exportfiles.segment_folder(self.config, self.name, self.segment)

    @property
    def key(self) -> str:
        return exportfiles.sync_key(self.name, self.segment)

    @property
    def failed_key(self) -> str:
        return keyspace.destination(self.name, f"failed:{self.segment}")

    def run(self, *, full: bool, dry_run: bool) -> SegmentReport:
        """Bring the destination's holding of the segment to what it should be."""
        started = time.perf_counter()
        report = self._run(full, dry_run)
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _run(self, full: bool, dry_run: bool) -> SegmentReport:
        report = SegmentReport(self.segment)
        try:
            if self.r.hget(self.key, "plan") and not dry_run:
                self.fold()
            run = latest_run(self.config)
            if run is None or self.segment not in run["members"]:
                report.status = Status.SKIPPED
                report.error = "no segment run yet" if run is None else "not in the last run"
                return report
            report.run_id = run["run_id"]
            full = full or self.r.hget(self.key, "full") == "1"
            if dry_run:
                return self._dry_run(run, report, full)
            self._plan(run, report, full)
            self._send_plan(report)
            self.fold()
            report.status = Status.PARTIAL if report.failed else Status.OK
        except Interrupted as exc:
            report.status, report.error = Status.INTERRUPTED, str(exc)
        except ExportError as exc:
            report.status, report.error = Status.FAILED, str(exc)
        return report

    def batch_size(self) -> int:
        """Return the rows per batch: the platform's limit, or the ``batch_size`` option
        when it is smaller (smaller payloads, finer checkpoints)."""
        wanted = self.settings.option("batch_size")
        limit = self.dest.batch_size
        return min(limit, int(wanted)) if wanted.isdigit() and int(wanted) > 0 else limit

    def held_path(self) -> Path | None:
        """Return the holding file (None before the first sync)."""
        return exportfiles.held_file(self.r, self.config, self.name, self.segment)

    def should(self, run: dict[str, Any], report: SegmentReport) -> Iterator[Entry]:
        """Yield the rows the destination should hold, sorted by person id."""
        path = audience.members_file(self.config, run)
        channel = self.dest.channel
        chunks = audience.member_ids(path, self.segment)
        for pids, contacts in audience.stream_contacts(self.r, chunks, channel, report.skipped):
            report.members += len(pids)
            for contact, row in zip(contacts, self.dest.encode(contacts), strict=True):
                if row is None:
                    report.skipped[audience.Skip.NO_IDENTIFIER.value] += 1
                    continue
                report.should_hold += 1
                yield Entry(contact.person_id, holdings.fingerprint(row), row)

    def _diff(self, run: dict[str, Any], report: SegmentReport, full: bool):
        held = self.held_path()
        if (
            held is not None
            and holdings.count(held)
            and holdings.columns_of(held) != tuple(self.dest.columns)
        ):
            raise ExportError(
                f"the rows kept for {self.name} have other columns than {self.dest.columns}: "
                "this destination's format changed; remove and add the destination again"
            )
        return plans.diff(
            holdings.read_entries(held),
            self.should(run, report),
            self.dest.key,
            full=full,
            replaces=self.dest.replaces,
        )

    def _dry_run(self, run: dict[str, Any], report: SegmentReport, full: bool) -> SegmentReport:
        for op, entry in self._diff(run, report, full):
            if op is Op.REMOVE:
                report.removed += 1
            else:
                report.added += 1
            rows = report.sample.setdefault(op.value, [])
            if len(rows) < reports.MAX_SAMPLES:
                rows.append(list(entry.row))
        report.status = Status.DRY_RUN
        return report

    def _plan(self, run: dict[str, Any], report: SegmentReport, full: bool) -> None:
        """Write the plan (removes, then adds or a replace) and its checkpoint."""
        session = f"{int(time.time() * 1000)}-{secrets.token_hex(4)}"
        plan_dir = self.folder / f"plan-{session}"
        columns = tuple(self.dest.columns)
        add_op = Op.REPLACE if full and self.dest.replaces else Op.ADD
        with (
            holdings.EntryWriter(plan_dir / "remove.parquet", columns) as removes,
            holdings.EntryWriter(plan_dir / "add.parquet", columns) as adds,
        ):
            for op, entry in self._diff(run, report, full):
                (removes if op is Op.REMOVE else adds).write(entry)
        report.session = session
        if not adds.rows:  # nothing to add: no replace session (plans.diff removed instead)
            add_op = Op.ADD
        with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(self.failed_key)
            pipe.hset(
                self.key,
                mapping={
                    "plan": session,
                    "add_op": add_op.value,
                    "removes": removes.rows,
                    "adds": adds.rows,
                    "acked_remove": 0,
                    "acked_add": 0,
                    "batch_size": self.batch_size(),
                    "run_id": run["run_id"],
                    "full": int(full),
                },
            )
            pipe.execute()

    def _send_plan(self, report: SegmentReport) -> None:
        state = self.r.hgetall(self.key)
        session, size = state["plan"], int(state["batch_size"])
        plan_dir = self.folder / f"plan-{session}"
        self._planned = int(state["removes"]) + int(state["adds"])
        if self.progress is not None:
            self.progress(0, self._planned)
        for op, file, total, acked in (
            (Op.REMOVE, "remove.parquet", int(state["removes"]), int(state["acked_remove"])),
            (Op(state["add_op"]), "add.parquet", int(state["adds"]), int(state["acked_add"])),
        ):
            entries = holdings.read_entries(plan_dir / file)
            target = self._target()
            for number, chunk in enumerate(holdings.chunks(entries, size), start=1):
                if number > acked:
                    rows = [e.row for e in chunk]
                    last = number * size >= total
                    batch = Batch(op, self.segment, target, rows, number, last, session, total)
                    self._send(batch, (number - 1) * size, report)

    def _send(self, batch: Batch, first: int, report: SegmentReport) -> None:
        """Send one batch and checkpoint it (with its refused rows) in one transaction."""
        if self.stop is not None and self.stop.is_set():
            raise Interrupted("stopped between batches; the next sync resumes")
        if self.lease is not None and self.lease.lost.is_set():
            raise Interrupted("lost the destination's lock; the next sync resumes")
        outcome = self.dest.send(batch)
        field = "acked_remove" if batch.op is Op.REMOVE else "acked_add"
        unsubscribed = [batch.rows[i] for i in outcome.unsubscribed]
        if unsubscribed and self.dest.key is not None:
            emails = [row[self.dest.key] for row in unsubscribed]
            unsubscribes.withdraw(
                self.r,
                self.settings.kind,
                self.name,
                emails,
                batch.session,
                self.config.stream_partitions,
            )
        refused = dict(outcome.failed)
        if batch.op is not Op.REMOVE:  # not added: held by nobody; a remove of them is done
            refused.update({i: "unsubscribed there" for i in outcome.unsubscribed})
        with self.r.pipeline(transaction=True) as pipe:
            if refused:
                pipe.rpush(self.failed_key, *(f"{batch.op.value}:{first + i}" for i in refused))
            pipe.hset(self.key, field, batch.number)
            reports.count_rows(pipe, self.name, len(batch.rows) - len(refused), len(refused))
            pipe.execute()
        sent = len(batch.rows) - len(refused)
        if batch.op is Op.REMOVE:
            report.removed += sent
        else:
            report.added += sent
        report.failed += len(outcome.failed)
        report.unsubscribed += len(outcome.unsubscribed)
        for reason in outcome.failed.values():
            report.note_error(reason)
        if self.progress is not None:
            self.progress(len(batch.rows), self._planned)

    def _target(self) -> str:
        """Return the platform's audience, list, group or tag the segment goes to."""
        found = (self.settings.target(self.segment, option) for option in TARGET_OPTIONS)
        return next((t for t in found if t), "")

    def fold(self) -> None:
        """Fold a plan's acknowledged rows into a new holding; clear the plan."""
        state = self.r.hgetall(self.key)
        session, size = state["plan"], int(state["batch_size"])
        plan_dir = self.folder / f"plan-{session}"
        refused = set(self.r.lrange(self.failed_key, 0, -1))
        done_removes = min(int(state["acked_remove"]) * size, int(state["removes"]))
        done_adds = min(int(state["acked_add"]) * size, int(state["adds"]))
        complete = done_removes == int(state["removes"]) and done_adds == int(state["adds"])
        add_op = Op(state["add_op"])
        replaced = add_op is Op.REPLACE and complete  # the platform holds the session alone
        held = iter(()) if replaced else holdings.read_entries(self.held_path())
        new = self.folder / f"held-{session}.parquet"
        columns = tuple(self.dest.columns)
        with holdings.EntryWriter(new, columns) as writer:
            writer.write_all(
                plans.fold(
                    held,
                    holdings.acked(plan_dir / "remove.parquet", done_removes, "remove", refused),
                    holdings.acked(plan_dir / "add.parquet", done_adds, add_op.value, refused),
                )
            )
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, "held", new.name)
            pipe.hdel(self.key, "plan", "add_op", "removes", "adds", "acked_remove", "acked_add")
            if complete:
                pipe.hdel(self.key, "full")
            pipe.delete(self.failed_key)
            pipe.execute()
        # The plan is folded; anything else here is left by a crash (a plan written but
        # never checkpointed, an older holding, a temporary file): none is read again.
        for path in self.folder.iterdir():
            if path != new and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path != new:
                path.unlink(missing_ok=True)
        if complete and isinstance(self.dest, Snapshotting):
            self.dest.snapshot(self.segment, session, (e.row for e in holdings.read_entries(new)))
