"""Writing what the topics say into the view: one transaction for everything polled at once.

Every write is idempotent (upserts keyed by job, batch and object id), so a batch of messages
replayed after a crash leaves the view as it was.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import aiosqlite
import orjson

from bulkjobs.domain.counts import Counts
from bulkjobs.domain.jobs import DELETED, EXPORT
from bulkjobs.gcpause import gc_paused, survivors_frozen
from bulkjobs.store import metrics
from bulkjobs.store.changes import (
    Applied,
    Create,
    Delete,
    Op,
    Patch,
    RelCreate,
    RelDelete,
    decode_applied,
    index_range,
    retry_sources,
)

log = logging.getLogger(__name__)

# Each op type's statement and the table it writes; ``_op_row`` makes its parameters (attributes as
# they came: JSON text).
_OP_SQL: dict[type[Op], str] = {
    Create: "INSERT OR REPLACE INTO objects (id, tenant, type, external_id, attributes, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)",
    Patch: "UPDATE objects SET attributes = json_patch(attributes, ?), updated_at = ? WHERE id = ?",
    Delete: "DELETE FROM objects WHERE id = ?",
    RelCreate: "INSERT OR REPLACE INTO relationships "
    "(id, tenant, relationship_type, source, target, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    RelDelete: "DELETE FROM relationships WHERE id = ?",
}
_OP_TABLE: dict[type[Op], str] = {Create: "objects", Patch: "objects", Delete: "objects",
                                  RelCreate: "relationships", RelDelete: "relationships"}


def _op_row(op: Op) -> tuple[Any, ...]:
    """The parameters of an op's statement in ``_OP_SQL``."""
    if type(op) is Create:
        at = op.at
        return (op.id, op.tenant, op.type, op.external_id, bytes(op.attributes).decode(), at, at)
    if type(op) is Patch:
        return (bytes(op.attributes).decode(), op.at, op.id)
    if type(op) is RelCreate:
        at = op.at
        return (op.id, op.tenant, op.relationship_type, op.source, op.target, at, at)
    return (op.id,)


def _json(value: Any) -> str | None:
    return orjson.dumps(value).decode() if value else None


def _batch_row(applied: Applied) -> tuple[Any, ...]:
    """An applied batch's row of ``job_batches``: its results (and a retry's sources) are stored
    as the worker wrote them (see schema.py for why)."""
    records, first, last = index_range(applied.results)
    return (applied.job_id, applied.seq, records, applied.at, applied.host, _json(applied.counts), first, last,
            retry_sources(applied, records), bytes(applied.results))


def _job_row(status: dict[str, Any]) -> tuple[Any, ...]:
    counts = Counts.from_dict(status["counts"])
    details = status.get("details") or {}
    return (
        status["id"], status["tenant"], status["type"], status["action"], status["description"],
        details.get("job_type"), status["status"], status["total"], counts.processed, counts.created,
        counts.updated, counts.deleted, counts.skipped, counts.failed, _json(status.get("error")),
        _json(details), status.get("host"), status.get("parent_id"), _json(status.get("schedule")),
        status.get("runs_fired", 0), status.get("retry_of"),
        status["created_at"], status["started_at"], status["completed_at"], status["updated_at"],
    )


def _file_rows(status: dict[str, Any]) -> list[tuple[Any, ...]]:
    """An export job's files as its status lists them: none until it has finished."""
    details = status.get("details") or {}
    file_format = (details.get("params") or {}).get("format")
    return [(file["name"], status["tenant"], status["id"], details.get("title"), file_format, file["size"],
             file["records"], file["created_at"]) for file in details.get("files") or []]


_JOB_FIELDS = ("id", "tenant", "type", "action", "description", "job_type", "status", "total", "processed",
               "created", "updated", "deleted", "skipped", "failed", "error", "details", "host", "parent_id",
               "schedule", "runs_fired", "retry_of", "created_at", "started_at", "completed_at", "updated_at")
_UPSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(_JOB_FIELDS)}) VALUES ({', '.join('?' * len(_JOB_FIELDS))}) "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{name} = excluded.{name}' for name in _JOB_FIELDS[1:])}"
)


# The first write of a batch wins: a batch replayed after a crash is the same batch.
_INSERT_BATCH = ("INSERT OR IGNORE INTO job_batches (job_id, seq, records, at, host, counts, first_idx, last_idx, "
                 "sources, results) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

_IDS_PER_QUERY = 500  # ids bound in one IN (...) query, well under SQLite's limit of variables


@dataclass
class _ChangeRows:
    """The rows of the applied batches polled at once: their batches (with their results) and ops."""

    batches: list[tuple[Any, ...]] = field(default_factory=list)
    # The ops' rows, made while the GC is paused: runs of one op type, in the order of the ops.
    op_runs: list[tuple[type[Op], list[tuple[Any, ...]]]] = field(default_factory=list)

    def add(self, value: bytes) -> None:
        """Add the rows of an ``AppliedBatch`` (a changes message's value); one that is not what a
        worker writes is logged and skipped."""
        try:
            applied = decode_applied(value)
            batch = _batch_row(applied)
            op_rows = [(type(op), _op_row(op)) for op in applied.ops]
        except ValueError:  # not written by a worker (msgspec's errors are ValueErrors): the view goes on
            log.exception("skipping a change that is not an applied batch")
            return
        self.batches.append(batch)
        for op_type, row in op_rows:
            if self.op_runs and self.op_runs[-1][0] == op_type:
                self.op_runs[-1][1].append(row)
            else:
                self.op_runs.append((op_type, [row]))


@dataclass
class _JobRows:
    """The rows of the latest status of each job polled at once."""

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    files: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def add(self, status: dict[str, Any]) -> None:
        """Add a ``JobStatus``'s rows; one that is not a job status is logged and skipped."""
        try:
            job_id = status["id"]
            job = _job_row(status)
            files = _file_rows(status) if status["type"] == EXPORT else []
        except (KeyError, TypeError, ValueError, AttributeError):
            log.exception("skipping a message that is not a job status")
            return
        self.latest[job_id], self.jobs[job_id], self.files[job_id] = status, job, files

    @property
    def gone(self) -> set[str]:
        """The jobs deleted: their tombstones arrived."""
        return {job_id for job_id, status in self.latest.items() if status["status"] == DELETED}


async def _write_ops(db: aiosqlite.Connection, op_runs: list[tuple[type[Op], list[tuple[Any, ...]]]],
                    written: Counter[str]) -> None:
    for op_type, rows in op_runs:
        await db.executemany(_OP_SQL[op_type], rows)
        written[_OP_TABLE[op_type]] += len(rows)


async def _deleted_among(db: aiosqlite.Connection, job_ids: set[str]) -> set[str]:
    """Which of these jobs are deleted (one query per poll, for the few jobs a poll's changes name)."""
    ids, gone = sorted(job_ids), set[str]()
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start:start + _IDS_PER_QUERY]
        rows = await db.execute_fetchall(f"SELECT id FROM deleted_jobs WHERE id IN ({', '.join('?' * len(chunk))})",
                                         chunk)
        gone.update(row[0] for row in rows)
    return gone


async def _write_changes(db: aiosqlite.Connection, changes: _ChangeRows, written: Counter[str]) -> None:
    await _write_ops(db, changes.op_runs, written)
    # A job can expire before the view has read all its results (they come on another topic):
    # those of a job already deleted are not written, so none is left behind without its job.
    gone = await _deleted_among(db, {batch[0] for batch in changes.batches})
    if gone:
        changes.batches = [row for row in changes.batches if row[0] not in gone]
    written.update(job_batches=len(changes.batches))
    if changes.batches:
        await db.executemany(_INSERT_BATCH, changes.batches)


async def _write_jobs(db: aiosqlite.Connection, job_rows: _JobRows, written: Counter[str]) -> None:
    gone_ids = job_rows.gone
    jobs = [row for job_id, row in job_rows.jobs.items() if job_id not in gone_ids]
    # An export's file rows are replaced by those its latest status lists (fewer once some
    # were deleted, none once the job is); other jobs have none, so they are not touched.
    exports = [(job_id,) for job_id, status in job_rows.latest.items()
               if status["type"] == EXPORT or job_id in gone_ids]
    files = [row for job_id, rows in job_rows.files.items() if job_id not in gone_ids for row in rows]
    written.update(jobs=len(jobs) + len(gone_ids), files=len(files), deleted_jobs=len(gone_ids))
    if jobs:
        await db.executemany(_UPSERT_JOB, jobs)
    if exports:
        await db.executemany("DELETE FROM files WHERE job_id = ?", exports)
    if files:
        await db.executemany("INSERT OR REPLACE INTO files (name, tenant, job_id, job_title, type, size, "
                             "records, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", files)
    if gone_ids:
        await _delete_jobs(db, {job_id: job_rows.latest[job_id]["tenant"] for job_id in gone_ids})


async def _delete_jobs(db: aiosqlite.Connection, tenants: dict[str, str]) -> None:
    """Remove deleted jobs (by id, with their tenant) from the view, leaving a tombstone each."""
    gone = [(job_id,) for job_id in tenants]
    await db.executemany("DELETE FROM jobs WHERE id = ?", gone)
    await db.executemany("DELETE FROM job_batches WHERE job_id = ?", gone)
    await db.executemany("INSERT OR IGNORE INTO deleted_jobs (id, tenant) VALUES (?, ?)", list(tenants.items()))


async def _write_heartbeats(db: aiosqlite.Connection, heartbeats: Iterable[dict[str, Any]],
                            written: Counter[str]) -> None:
    for beat in heartbeats:
        written["workers"] += 1
        await db.execute(
            "INSERT OR REPLACE INTO workers (worker, host, pid, at, partitions) VALUES (?, ?, ?, ?, ?)",
            (beat["worker"], beat["host"], beat["pid"], beat["at"], orjson.dumps(beat["partitions"]).decode()),
        )


async def read_positions(db: aiosqlite.Connection) -> dict[tuple[str, int], int]:
    """The offset of the next message to read in each partition the view was written from."""
    rows = await db.execute_fetchall("SELECT topic, partition, next_offset FROM positions")
    return {(row[0], row[1]): row[2] for row in rows}


class ViewWriter:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def write(
        self,
        applied_batches: Iterable[bytes],
        statuses: Iterable[dict[str, Any]],
        heartbeats: Iterable[dict[str, Any]],
        positions: Mapping[tuple[str, int], int] = MappingProxyType({}),
    ) -> list[dict[str, Any]]:
        """Apply changes (in their order), then job snapshots, then worker heartbeats, and the
        ``positions`` (topic, partition) -> next offset they were read up to, in one commit;
        the latest status of each job written. The applied batches are the changes messages'
        values as they came (``store.changes`` reads them); the statuses and heartbeats may be
        decoded as they are iterated (the feeder's are). A message that is not what its topic
        carries is logged and skipped."""
        changes, job_rows = _ChangeRows(), _JobRows()
        # The rows live on through the transaction's awaits: frozen, no collection rescans them
        # (the first one after the pause scanned all of a poll's rows: 5% of the store's CPU).
        with survivors_frozen():
            with gc_paused():  # a poll's rows are many fresh objects: one unit of synchronous work
                for applied in applied_batches:
                    changes.add(applied)
                for status in statuses:
                    job_rows.add(status)
            db, written, started = self.db, Counter[str](), time.perf_counter()
            await db.execute("BEGIN")
            try:
                await _write_changes(db, changes, written)
                await _write_jobs(db, job_rows, written)
                await _write_heartbeats(db, heartbeats, written)
                if positions:
                    await db.executemany("INSERT OR REPLACE INTO positions (topic, partition, next_offset) "
                                         "VALUES (?, ?, ?)", [(*key, offset) for key, offset in positions.items()])
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise
        metrics.transaction_written(time.perf_counter() - started, written)
        return list(job_rows.latest.values())
