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

    async def _count(self, sql: str, params: tuple[Any, ...]) -> int:
        rows = await self._all(sql, params)
        return int(rows[0][0])

    async def job(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        rows = await self._all(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ? AND tenant = ?", (job_id, tenant))
        return _job(rows[0]) if rows else None

    async def jobs(self, tenant: str, status: str | None, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        where, params = "tenant = ?", (tenant,)
        if status:
            where, params = "tenant = ? AND status = ?", (tenant, status)
        rows = await self._all(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        total = await self._count(f"SELECT count(*) FROM jobs WHERE {where}", params)
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
        rows = await self._all("SELECT * FROM objects WHERE id = ? AND tenant = ?", (object_id, tenant))
        return _object(rows[0]) if rows else None

    async def objects(self, tenant: str, object_type: str | None, external_id: str | None,
                      limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        where, params = ["tenant = ?"], [tenant]
        if object_type is not None:
            where.append("type = ?")
            params.append(object_type)
        if external_id is not None:
            where.append("external_id = ?")
            params.append(external_id)
        clause = " AND ".join(where)
        rows = await self._all(
            f"SELECT * FROM objects WHERE {clause} ORDER BY created_at, id LIMIT ? OFFSET ?", (*params, limit, offset)
        )
        total = await self._count(f"SELECT count(*) FROM objects WHERE {clause}", tuple(params))
        return [_object(row) for row in rows], total

    async def relationship(self, tenant: str, rel_id: str) -> dict[str, Any] | None:
        rows = await self._all("SELECT * FROM relationships WHERE id = ? AND tenant = ?", (rel_id, tenant))
        return _relationship(rows[0]) if rows else None

    async def relationships(self, tenant: str, relationship_type: str | None, limit: int,
                            offset: int) -> tuple[list[dict[str, Any]], int]:
        where, params = "tenant = ?", (tenant,)
        if relationship_type is not None:
            where, params = "tenant = ? AND relationship_type = ?", (tenant, relationship_type)
        rows = await self._all(
            f"SELECT * FROM relationships WHERE {where} ORDER BY created_at, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        total = await self._count(f"SELECT count(*) FROM relationships WHERE {where}", params)
        return [_relationship(row) for row in rows], total

    async def latest_heartbeat(self) -> str | None:
        rows = await self._all("SELECT max(at) FROM workers", ())
        return rows[0][0] if rows else None
