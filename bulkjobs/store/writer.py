"""Writing what the topics say into the view: one transaction for everything polled at once.

Every write is idempotent (upserts keyed by job, batch, record index and object id), so a batch
of messages replayed after a crash leaves the view as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from itertools import groupby
from typing import Any

import aiosqlite
import orjson

from bulkjobs.domain.counts import Counts
from bulkjobs.domain.jobs import DELETED, EXPORT
from bulkjobs.domain.records import (
    OP_CREATE,
    OP_DELETE,
    OP_PATCH,
    OP_REL_CREATE,
    OP_REL_DELETE,
)
from bulkjobs.store import metrics

log = logging.getLogger(__name__)

_OP_SQL = {
    OP_CREATE: "INSERT OR REPLACE INTO objects (id, tenant, type, external_id, attributes, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)",
    OP_PATCH: "UPDATE objects SET attributes = json_patch(attributes, ?), updated_at = ? WHERE id = ?",
    OP_DELETE: "DELETE FROM objects WHERE id = ?",
    OP_REL_CREATE: "INSERT OR REPLACE INTO relationships "
    "(id, tenant, relationship_type, source, target, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    OP_REL_DELETE: "DELETE FROM relationships WHERE id = ?",
}
_OP_TABLE = {OP_CREATE: "objects", OP_PATCH: "objects", OP_DELETE: "objects", OP_REL_CREATE: "relationships",
             OP_REL_DELETE: "relationships"}


def _op_row(op: list[Any]) -> tuple[Any, ...]:
    kind = op[0]
    if kind == OP_CREATE:
        _, object_id, tenant, object_type, external_id, attributes, at = op
        return (object_id, tenant, object_type, external_id, orjson.dumps(attributes).decode(), at, at)
    if kind == OP_PATCH:
        _, object_id, attributes, at = op
        return (orjson.dumps(attributes).decode(), at, object_id)
    if kind == OP_REL_CREATE:
        _, rel_id, tenant, relationship_type, source, target, at = op
        return (rel_id, tenant, relationship_type, source, target, at, at)
    return (op[1],)


def _json(value: Any) -> str | None:
    return orjson.dumps(value).decode() if value else None


def _job_row(status: dict[str, Any]) -> tuple[Any, ...]:
    counts = Counts.from_dict(status["counts"])
    details = status.get("details") or {}
    return (
        status["id"], status["tenant"], status["type"], status["action"], status["description"],
        details.get("job_type"), status["status"], status["total"], counts.processed, counts.created,
        counts.updated, counts.deleted, counts.skipped, counts.failed, _json(status.get("error")),
        _json(details), status.get("host"), status.get("parent_id"), _json(status.get("schedule")),
        status.get("runs_fired", 0),
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
               "schedule", "runs_fired", "created_at", "started_at", "completed_at", "updated_at")
_UPSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(_JOB_FIELDS)}) VALUES ({', '.join('?' * len(_JOB_FIELDS))}) "
    f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{name} = excluded.{name}' for name in _JOB_FIELDS[1:])}"
)


class ViewWriter:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def write(
        self,
        applied_batches: Iterable[dict[str, Any]],
        statuses: Iterable[dict[str, Any]],
        heartbeats: Iterable[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Apply changes (in their order), then job snapshots, then worker heartbeats, in one
        commit; the latest status of each job written. A message that is not what its topic
        carries is logged and skipped."""
        batch_rows: list[tuple[Any, ...]] = []
        result_rows: list[tuple[Any, ...]] = []
        ops: list[list[Any]] = []
        for applied in applied_batches:
            try:
                job_id = applied["job_id"]
                batch_row = (job_id, applied["seq"], len(applied["results"]), applied["at"], applied.get("host"),
                             _json(applied["counts"]))
                results = [(job_id, index, 1 if success else 0, object_id, _json(errors), outcome)
                           for index, success, object_id, errors, outcome in applied["results"]]
                applied_ops = list(applied["ops"])
            except (KeyError, TypeError, ValueError):  # not written by a worker: the view goes on
                log.exception("skipping a change that is not an applied batch")
                continue
            batch_rows.append(batch_row)
            result_rows.extend(results)
            ops.extend(applied_ops)
        latest: dict[str, tuple[dict[str, Any], tuple[Any, ...], list[tuple[Any, ...]]]] = {}
        for status in statuses:
            try:
                latest[status["id"]] = (status, _job_row(status),
                                        _file_rows(status) if status["type"] == EXPORT else [])
            except (KeyError, TypeError, ValueError, AttributeError):
                log.exception("skipping a message that is not a job status")
        gone_ids = {job_id for job_id, (status, _, _) in latest.items() if status["status"] == DELETED}
        gone = [(job_id,) for job_id in gone_ids]
        tombstones = [(job_id, latest[job_id][0]["tenant"]) for job_id in gone_ids]
        jobs = [row for job_id, (_, row, _) in latest.items() if job_id not in gone_ids]
        # An export's file rows are replaced by those its latest status lists (fewer once some
        # were deleted, none once the job is); other jobs have none, so they are not touched.
        exports = [(job_id,) for job_id, (status, _, _) in latest.items()
                   if status["type"] == EXPORT or job_id in gone_ids]
        file_rows = [row for job_id, (_, _, rows) in latest.items() if job_id not in gone_ids for row in rows]

        beats = list(heartbeats)
        written = {"objects": 0, "relationships": 0, "results": len(result_rows), "job_batches": len(batch_rows),
                   "jobs": len(jobs) + len(gone), "files": len(file_rows), "deleted_jobs": len(gone),
                   "workers": len(beats)}
        db, started = self.db, time.perf_counter()
        await db.execute("BEGIN")
        try:
            for kind, run in groupby(ops, key=lambda op: op[0]):
                rows = [_op_row(op) for op in run]
                await db.executemany(_OP_SQL[kind], rows)
                written[_OP_TABLE[kind]] += len(rows)
            if result_rows:
                await db.executemany(
                    "INSERT OR REPLACE INTO results (job_id, idx, success, object_id, errors, outcome) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    result_rows,
                )
            if batch_rows:
                await db.executemany("INSERT OR IGNORE INTO job_batches (job_id, seq, records, at, host, counts) "
                                     "VALUES (?, ?, ?, ?, ?, ?)", batch_rows)
            if jobs:
                await db.executemany(_UPSERT_JOB, jobs)
            if exports:
                await db.executemany("DELETE FROM files WHERE job_id = ?", exports)
            if file_rows:
                await db.executemany("INSERT OR REPLACE INTO files (name, tenant, job_id, job_title, type, size, "
                                     "records, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", file_rows)
            if gone:
                await db.executemany("DELETE FROM jobs WHERE id = ?", gone)
                await db.executemany("DELETE FROM results WHERE job_id = ?", gone)
                await db.executemany("DELETE FROM job_batches WHERE job_id = ?", gone)
                await db.executemany("INSERT OR IGNORE INTO deleted_jobs (id, tenant) VALUES (?, ?)", tombstones)
            for beat in beats:
                await db.execute(
                    "INSERT OR REPLACE INTO workers (worker, host, pid, at, partitions) VALUES (?, ?, ?, ?, ?)",
                    (beat["worker"], beat["host"], beat["pid"], beat["at"], orjson.dumps(beat["partitions"]).decode()),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        metrics.transaction_written(time.perf_counter() - started, written)
        return [status for status, _, _ in latest.values()]
