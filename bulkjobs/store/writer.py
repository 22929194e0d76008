"""Writing what the topics say into the view: one transaction for everything polled at once.

Every write is idempotent (upserts keyed by job, batch, record index and object id), so a batch
of messages replayed after a crash leaves the view as it was.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any, Iterable

import aiosqlite
import orjson

from bulkjobs.domain.jobs import DELETED
from bulkjobs.domain.records import OP_CREATE, OP_DELETE, OP_PATCH, OP_REL_CREATE, OP_REL_DELETE

_OP_SQL = {
    OP_CREATE: "INSERT OR REPLACE INTO objects (id, tenant, type, external_id, attributes, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)",
    OP_PATCH: "UPDATE objects SET attributes = json_patch(attributes, ?), updated_at = ? WHERE id = ?",
    OP_DELETE: "DELETE FROM objects WHERE id = ?",
    OP_REL_CREATE: "INSERT OR REPLACE INTO relationships "
    "(id, tenant, relationship_type, source, target, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    OP_REL_DELETE: "DELETE FROM relationships WHERE id = ?",
}


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


def _job_row(status: dict[str, Any]) -> tuple[Any, ...]:
    counts = status["counts"]
    error = status.get("error")
    return (
        status["id"], status["tenant"], status["type"], status["action"], status["description"],
        status["status"], status["total"], counts["processed"], counts["created"], counts["updated"],
        counts["deleted"], counts["failed"], orjson.dumps(error).decode() if error else None,
        status["created_at"], status["started_at"], status["completed_at"], status["updated_at"],
    )


_UPSERT_JOB = """
INSERT INTO jobs (id, tenant, type, action, description, status, total, processed, created, updated,
                  deleted, failed, error, created_at, started_at, completed_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    tenant = excluded.tenant, type = excluded.type, action = excluded.action,
    description = excluded.description, status = excluded.status, total = excluded.total,
    processed = excluded.processed, created = excluded.created, updated = excluded.updated,
    deleted = excluded.deleted, failed = excluded.failed, error = excluded.error,
    created_at = excluded.created_at, started_at = excluded.started_at,
    completed_at = excluded.completed_at, updated_at = excluded.updated_at
"""


class ViewWriter:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def write(
        self,
        applied_batches: Iterable[dict[str, Any]],
        statuses: Iterable[dict[str, Any]],
        heartbeats: Iterable[dict[str, Any]],
    ) -> None:
        """Apply changes (in their order), then job snapshots, then worker heartbeats, in one commit."""
        batch_rows: list[tuple[str, int, int]] = []
        result_rows: list[tuple[Any, ...]] = []
        ops: list[list[Any]] = []
        for applied in applied_batches:
            job_id = applied["job_id"]
            batch_rows.append((job_id, applied["seq"], len(applied["results"])))
            for index, success, object_id, errors in applied["results"]:
                result_rows.append(
                    (job_id, index, 1 if success else 0, object_id, orjson.dumps(errors).decode() if errors else None)
                )
            ops.extend(applied["ops"])
        latest: dict[str, dict[str, Any]] = {}
        for status in statuses:
            latest[status["id"]] = status
        gone = [(job_id,) for job_id, status in latest.items() if status["status"] == DELETED]
        jobs = [_job_row(status) for status in latest.values() if status["status"] != DELETED]

        db = self.db
        await db.execute("BEGIN")
        try:
            for kind, run in groupby(ops, key=lambda op: op[0]):
                await db.executemany(_OP_SQL[kind], [_op_row(op) for op in run])
            if result_rows:
                await db.executemany(
                    "INSERT OR REPLACE INTO results (job_id, idx, success, object_id, errors) VALUES (?, ?, ?, ?, ?)",
                    result_rows,
                )
            if batch_rows:
                await db.executemany("INSERT OR IGNORE INTO job_batches (job_id, seq, records) VALUES (?, ?, ?)", batch_rows)
            if jobs:
                await db.executemany(_UPSERT_JOB, jobs)
            if gone:
                await db.executemany("DELETE FROM jobs WHERE id = ?", gone)
                await db.executemany("DELETE FROM results WHERE job_id = ?", gone)
                await db.executemany("DELETE FROM job_batches WHERE job_id = ?", gone)
            for beat in heartbeats:
                await db.execute(
                    "INSERT OR REPLACE INTO workers (worker, host, pid, at, partitions) VALUES (?, ?, ?, ?, ?)",
                    (beat["worker"], beat["host"], beat["pid"], beat["at"], orjson.dumps(beat["partitions"]).decode()),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
