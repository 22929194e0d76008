"""Reading the view for the API: jobs, results, objects, relationships and worker liveness.

Every query is scoped by tenant; rows come back as plain dicts shaped for the HTTP bodies.
"""

from __future__ import annotations

from typing import Any

import aiosqlite
import orjson

from bulkjobs.domain.counts import Counts, progress
from bulkjobs.domain.jobs import visible_status

_JOB_COLUMNS = (
    "id, type, action, description, status, total, processed, created, updated, deleted, failed, error, "
    "created_at, started_at, completed_at, updated_at, "
    "(SELECT coalesce(sum(records), 0) FROM job_batches b WHERE b.job_id = jobs.id) AS results_stored"
)


def _job(row: aiosqlite.Row) -> dict[str, Any]:
    counts = Counts(processed=row["processed"], created=row["created"], updated=row["updated"],
                    deleted=row["deleted"], failed=row["failed"])
    return {
        "id": row["id"],
        "status": visible_status(row["status"], counts.processed, row["results_stored"]),
        "type": row["type"],
        "action": row["action"],
        "description": row["description"],
        "counts": {"total": row["total"], **counts.to_dict()},
        "progress": progress(counts.processed, row["total"]),
        "error": orjson.loads(row["error"]) if row["error"] else None,
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
        "updated_at": row["updated_at"],
    }


def _object(row: aiosqlite.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "external_id": row["external_id"],
        "attributes": orjson.loads(row["attributes"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _relationship(row: aiosqlite.Row) -> dict[str, Any]:
    return {key: row[key] for key in ("id", "relationship_type", "source", "target", "created_at", "updated_at")}


class ViewReader:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.db.row_factory = aiosqlite.Row

    async def _all(self, sql: str, params: tuple[Any, ...]) -> list[aiosqlite.Row]:
        async with self.db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _page(self, table: str, columns: str, tenant: str, filters: dict[str, str | None],
                    order: str, limit: int, offset: int) -> tuple[list[aiosqlite.Row], int]:
        """One page of a tenant's rows matching the given (non-None) column filters, and their count."""
        wanted = {column: value for column, value in filters.items() if value is not None}
        where = " AND ".join(["tenant = ?", *(f"{column} = ?" for column in wanted)])
        params = (tenant, *wanted.values())
        rows = await self._all(
            f"SELECT {columns} FROM {table} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?", (*params, limit, offset)
        )
        counted = await self._all(f"SELECT count(*) FROM {table} WHERE {where}", params)
        return rows, int(counted[0][0])

    async def _one(self, table: str, columns: str, tenant: str, row_id: str) -> aiosqlite.Row | None:
        rows = await self._all(f"SELECT {columns} FROM {table} WHERE id = ? AND tenant = ?", (row_id, tenant))
        return rows[0] if rows else None

    async def job(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        row = await self._one("jobs", _JOB_COLUMNS, tenant, job_id)
        return _job(row) if row else None

    async def jobs(self, tenant: str, status: str | None, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        rows, total = await self._page("jobs", _JOB_COLUMNS, tenant, {"status": status},
                                       "created_at DESC, id", limit, offset)
        return [_job(row) for row in rows], total

    async def results(self, job_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT idx, success, object_id, errors FROM results WHERE job_id = ? AND idx >= ? ORDER BY idx LIMIT ?",
            (job_id, offset, limit),
        )
        return [
            {"index": row["idx"], "success": bool(row["success"]), "id": row["object_id"],
             "errors": orjson.loads(row["errors"]) if row["errors"] else []}
            for row in rows
        ]

    async def object(self, tenant: str, object_id: str) -> dict[str, Any] | None:
        row = await self._one("objects", "*", tenant, object_id)
        return _object(row) if row else None

    async def objects(self, tenant: str, object_type: str | None, external_id: str | None,
                      limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        rows, total = await self._page("objects", "*", tenant, {"type": object_type, "external_id": external_id},
                                       "created_at, id", limit, offset)
        return [_object(row) for row in rows], total

    async def relationship(self, tenant: str, rel_id: str) -> dict[str, Any] | None:
        row = await self._one("relationships", "*", tenant, rel_id)
        return _relationship(row) if row else None

    async def relationships(self, tenant: str, relationship_type: str | None, limit: int,
                            offset: int) -> tuple[list[dict[str, Any]], int]:
        rows, total = await self._page("relationships", "*", tenant, {"relationship_type": relationship_type},
                                       "created_at, id", limit, offset)
        return [_relationship(row) for row in rows], total

    async def workers(self, seen_since: str) -> list[dict[str, Any]]:
        """Workers whose last heartbeat is at or after ``seen_since``, with the partitions they hold."""
        rows = await self._all("SELECT * FROM workers WHERE at >= ? ORDER BY worker", (seen_since,))
        return [{"worker": row["worker"], "host": row["host"], "pid": row["pid"], "seen_at": row["at"],
                 "partitions": orjson.loads(row["partitions"])} for row in rows]
