"""Reading the view for the API: jobs, results, objects, relationships, export files and worker
liveness.

Every query is scoped by tenant; rows come back as plain dicts shaped for the HTTP bodies.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any

import aiosqlite
import orjson

from bulkjobs.domain.changes import (
    RESULT_ERRORS,
    RESULT_ID,
    RESULT_INDEX,
    RESULT_OUTCOME,
    RESULT_RECORD,
    RESULT_SUCCESS,
    Outcome,
    result_index,
)
from bulkjobs.domain.counts import Counts
from bulkjobs.domain.jobs import ACTIVE, EXPORT, Job, public_body, visible_status
from bulkjobs.store import sqlite

# Applied batches fetched at a time while a page of results is merged: each holds its results
# as one value of tens of KB, so fewer than aiosqlite's 64 rows a fetch.
_BATCHES_AT_ONCE = 8
_UNSUCCESSFUL = frozenset({Outcome.FAILED, Outcome.SKIPPED})  # the outcomes of the results whose success is false
_Stored = tuple[list[Any], int | None]  # a stored result, and a retry's record's index in the job retried


def _kept(result: list[Any]) -> bool:
    """Whether a failed result holds its record's body (for a retry)."""
    return len(result) > RESULT_RECORD


def _merge(runs: list[list[list[Any]]], limit: int, sources: dict[int, int]) -> list[_Stored]:
    """The first ``limit`` results of ``runs`` (each in record order) in record order, with
    their sources. A record has one result: the batches that hold it are its partition's, cut
    from its records once (a batch applied again is the same batch, not written again)."""
    return [(result, sources.get(result[RESULT_INDEX])) for result in sorted(chain(*runs), key=result_index)[:limit]]


_JOB_COLUMNS = (
    "id, type, action, description, status, total, processed, created, updated, deleted, skipped, "
    "failed, error, details, host, parent_id, schedule, runs_fired, retry_of, created_at, started_at, completed_at, "
    "updated_at, "
    "(SELECT coalesce(sum(records), 0) FROM job_batches b WHERE b.job_id = jobs.id) AS results_stored"
)

# The job list's sort fields, by the name a client uses.
JOB_SORTS = ("description", "job_type", "status", "host", "created_at", "started_at", "completed_at")


def _job(row: aiosqlite.Row, retention: int) -> dict[str, Any]:
    job = Job(
        id=row["id"], type=row["type"], action=row["action"], description=row["description"], total=row["total"],
        counts=Counts(processed=row["processed"], created=row["created"], updated=row["updated"],
                      deleted=row["deleted"], skipped=row["skipped"], failed=row["failed"]),
        status=row["status"], error=orjson.loads(row["error"]) if row["error"] else None,
        details=orjson.loads(row["details"]) if row["details"] else None, host=row["host"],
        parent_id=row["parent_id"], schedule=orjson.loads(row["schedule"]) if row["schedule"] else None,
        runs_fired=row["runs_fired"], retry_of=row["retry_of"],
        created_at=row["created_at"], started_at=row["started_at"], completed_at=row["completed_at"],
        updated_at=row["updated_at"],
    )
    has_results = job.type != EXPORT  # an export writes files, not results
    processed = job.counts.processed if has_results else 0
    return public_body(job, visible_status(job.status, processed, row["results_stored"]), retention=retention)


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere (with ``ESCAPE '\\'``)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _attribute(field: str) -> str:
    """The SQL of one field of an object for a filter: a column or an attribute."""
    if field in ("id", "external_id"):
        return field
    return "json_extract(attributes, '$.' || ?)"


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


def _file(row: aiosqlite.Row) -> dict[str, Any]:
    return {key: row[key] for key in ("name", "type", "size", "records", "created_at", "job_id", "job_title")}


# A job's files in the order written: by time, then by number (``<job id>-2`` before ``-10``).
_FILE_ORDER = ("created_at", "length(name)", "name")
# Objects and relationships, oldest first. Objects made at one time (one applied batch's) follow
# in the order the view wrote them: their rowid, which every index of the objects ends with (an
# index of times and ids cost the store 0.6 µs a record more to write).
OBJECT_ORDER = ("created_at", "rowid")
RELATIONSHIP_ORDER = ("created_at", "id")
_Key = tuple[Any, ...]  # the values of a row's sort expressions


@dataclass(frozen=True)
class Paging:
    """Which page of a list to read: ``limit`` items from position ``offset``, or, with ``after``
    (the sort key of the item just before the page, from a cursor), the items after it, found
    through an index however deep the page is (``offset`` then only says where the page starts)."""

    limit: int
    offset: int = 0
    after: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Page:
    """A page of a list: its items, how many the whole list has, whether more follow, and the
    sort key of the last item (what a cursor to the next page holds)."""

    items: list[dict[str, Any]]
    total: int
    more: bool
    last_key: tuple[Any, ...] | None


def _after(order: list[tuple[str, bool]], key: tuple[Any, ...]) -> tuple[str, list[Any]]:
    """The condition (and its parameters) of the rows that sort after ``key`` in ``order``
    (``(expression, descending)`` pairs). One direction and no nulls is a row-value comparison,
    which SQLite answers by seeking an index; otherwise each column's term, null-safe."""
    if len({descending for _, descending in order}) == 1 and None not in key:
        columns = ", ".join(expression for expression, _ in order)
        return f"({columns}) {'<' if order[0][1] else '>'} ({', '.join('?' * len(key))})", list(key)
    terms, params, equal = [], [], ""
    for (expression, descending), value in zip(order, key, strict=True):
        terms.append(f"({equal}({expression}) {'<' if descending else '>'} ?)")
        params.extend([*key[:len(terms) - 1], value])
        equal += f"({expression}) IS ? AND "
    return "(" + " OR ".join(terms) + ")", params


class ViewReader:
    def __init__(self, db: aiosqlite.Connection, job_retention: int = 0) -> None:
        self.db = db
        self.job_retention = job_retention  # seconds (BULKJOBS_JOB_RETENTION): what job bodies show as expires_at
        self.db.row_factory = sqlite.Row

    async def _all(self, sql: str, params: tuple[Any, ...]) -> list[aiosqlite.Row]:
        async with self.db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _page(self, table: str, where: list[str], params: list[Any], order: list[tuple[str, bool]],
                    paging: Paging, columns: str = "*") -> tuple[list[aiosqlite.Row], int, bool, _Key | None]:
        """A page of the rows meeting every condition of ``where``, sorted by ``order``
        (``(expression, descending)`` pairs ending with a unique column); their count, whether
        more follow, and the last row's sort key."""
        condition = " AND ".join(where)
        rows_where, rows_params, skip = condition, list(params), paging.offset
        if paging.after is not None:
            after, after_params = _after(order, paging.after)
            rows_where, skip = f"{condition} AND {after}", 0
            rows_params.extend(after_params)
        keys = ", ".join(f"{expression} AS _key{n}" for n, (expression, _) in enumerate(order))
        sort = ", ".join(f"{expression} {'DESC' if descending else 'ASC'}" for expression, descending in order)
        rows = await self._all(
            f"SELECT {columns}, {keys} FROM {table} WHERE {rows_where} ORDER BY {sort} LIMIT ? OFFSET ?",
            (*rows_params, paging.limit + 1, skip))
        counted = await self._all(f"SELECT count(*) FROM {table} WHERE {condition}", tuple(params))
        more, rows = len(rows) > paging.limit, rows[:paging.limit]
        last_key = tuple(rows[-1][f"_key{n}"] for n in range(len(order))) if rows else None
        return rows, int(counted[0][0]), more, last_key

    async def _tenant_page(self, table: str, tenant: str, filters: dict[str, str | None], order: tuple[str, ...],
                           paging: Paging) -> tuple[list[aiosqlite.Row], int, bool, _Key | None]:
        """A page of a tenant's rows matching the given (non-None) column filters, in ``order``
        (ascending)."""
        wanted = {column: value for column, value in filters.items() if value is not None}
        return await self._page(table, ["tenant = ?", *(f"{column} = ?" for column in wanted)],
                                [tenant, *wanted.values()], [(column, False) for column in order], paging)

    async def _one(self, table: str, columns: str, tenant: str, row_id: str) -> aiosqlite.Row | None:
        rows = await self._all(f"SELECT {columns} FROM {table} WHERE id = ? AND tenant = ?", (row_id, tenant))
        return rows[0] if rows else None

    async def job(self, tenant: str, job_id: str) -> dict[str, Any] | None:
        row = await self._one("jobs", _JOB_COLUMNS, tenant, job_id)
        return _job(row, self.job_retention) if row else None

    async def job_ids(self, tenant: str, job_ids: list[str]) -> set[str]:
        """Which of ``job_ids`` the view shows for the tenant; keep the list short (the API
        takes at most 100): each id is a parameter of one statement."""
        rows = await self._all(f"SELECT id FROM jobs WHERE tenant = ? AND id IN ({', '.join('?' * len(job_ids))})",
                               (tenant, *job_ids))
        return {row["id"] for row in rows}

    async def active_jobs(self, tenant: str) -> int:
        """How many of the tenant's jobs are queued or processing (``domain.jobs.ACTIVE``)."""
        marks = ", ".join("?" * len(ACTIVE))
        rows = await self._all(f"SELECT count(*) FROM jobs WHERE tenant = ? AND status IN ({marks})",
                               (tenant, *sorted(ACTIVE)))
        return int(rows[0][0])

    async def deleted(self, tenant: str, job_id: str) -> bool:
        """Whether the tenant's job ``job_id`` has been deleted."""
        return bool(await self._all("SELECT 1 FROM deleted_jobs WHERE id = ? AND tenant = ?", (job_id, tenant)))

    async def jobs(self, tenant: str, *, status: str | None = None,
                   limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """The tenant's newest jobs (of a status) and how many there are."""
        page = await self.job_page(tenant, Paging(limit), status=status)
        return page.items, page.total

    async def job_page(self, tenant: str, paging: Paging, *, status: str | None = None, search: str | None = None,
                       sort: str = "created_at", descending: bool = True, parent_id: str | None = None,
                       executions_only: bool = False) -> Page:
        """A page of the tenant's jobs: ``search`` matches within the description; ``sort`` is
        one of ``JOB_SORTS`` (nulls last either way, then by id); ``parent_id`` keeps one
        definition's runs, ``executions_only`` every job but the scheduled definitions (the history)."""
        if sort not in JOB_SORTS:
            raise ValueError(f"unknown sort field {sort!r}")
        where, params = ["tenant = ?"], [tenant]
        for condition, value in (("parent_id = ?", parent_id), ("status = ?", status),
                                 ("description LIKE ? ESCAPE '\\'", search and _like(search))):
            if value:
                where.append(condition)
                params.append(value)
        if executions_only:
            where.append("schedule IS NULL")
        order = [(f"{sort} IS NULL", False), (sort, descending), ("id", descending)]
        rows, total, more, last_key = await self._page("jobs", where, params, order, paging, _JOB_COLUMNS)
        return Page([_job(row, self.job_retention) for row in rows], total, more, last_key)

    async def _stored_results(self, job_id: str, start: int, limit: int, outcomes: frozenset[str] | None = None,
                              keep: Callable[[list[Any]], bool] | None = None) -> list[_Stored]:
        """Up to ``limit`` of the job's stored results from record index ``start`` on, in record
        order: of ``outcomes`` only, if given, and only those ``keep`` keeps.

        A batch holds its partition's share of a range of indexes, so a page is merged from the
        batches in the order of their first index: once the results found below the next
        batch's first index are ``limit``, no later batch can hold one of the page. A batch
        whose counts show none of ``outcomes`` is not read (one whose counts do not say is)."""
        if limit <= 0 or outcomes is not None and not outcomes:
            return []
        where, params = "job_id = ? AND last_idx >= ?", [job_id, start]
        if outcomes is not None:
            where += " AND (" + " OR ".join(["coalesce(json_extract(counts, ?), 1) > 0"] * len(outcomes)) + ")"
            params.extend(f"$.{outcome}" for outcome in sorted(outcomes))
        runs: list[list[list[Any]]] = []
        found = 0  # results in the runs: a page is full only once they are at least ``limit``
        sources: dict[int, int] = {}
        async with self.db.execute(f"SELECT first_idx, sources, results FROM job_batches WHERE {where} "
                                   "ORDER BY first_idx", params) as cursor:
            while rows := await cursor.fetchmany(_BATCHES_AT_ONCE):
                for first, batch_sources, results in rows:
                    if found >= limit and sum(bisect_left(run, first, key=result_index) for run in runs) >= limit:
                        return _merge(runs, limit, sources)
                    run = orjson.loads(results)
                    if batch_sources is not None:
                        sources.update(zip((result[RESULT_INDEX] for result in run), orjson.loads(batch_sources),
                                           strict=False))
                    run.sort(key=result_index)
                    run = run[bisect_left(run, start, key=result_index):]
                    if outcomes is not None:
                        run = [result for result in run if result[RESULT_OUTCOME] in outcomes]
                    runs.append(run if keep is None else [result for result in run if keep(result)])
                    found += len(runs[-1])
        return _merge(runs, limit, sources)

    async def results(self, job_id: str, limit: int, offset: int, failed_only: bool = False,
                      outcome: str | None = None) -> list[dict[str, Any]]:
        """Results from record index ``offset`` on, in record order (only unsuccessful ones, or
        only those of one outcome, if asked)."""
        outcomes = None if outcome is None else frozenset({outcome})
        if failed_only:
            outcomes = _UNSUCCESSFUL if outcomes is None else outcomes & _UNSUCCESSFUL
        stored = await self._stored_results(job_id, offset, limit, outcomes)
        return [
            {"index": result[RESULT_INDEX], "success": bool(result[RESULT_SUCCESS]), "status": result[RESULT_OUTCOME],
             "id": result[RESULT_ID], "errors": result[RESULT_ERRORS] or [], "source_index": source}
            for result, source in stored
        ]

    async def outcomes(self, job_id: str, start: int, limit: int) -> list[tuple[int, str]]:
        """``(index, outcome)`` of the job's results from record index ``start`` on, in order."""
        stored = await self._stored_results(job_id, start, limit)
        return [(result[RESULT_INDEX], result[RESULT_OUTCOME]) for result, _ in stored]

    async def failed_records(self, job_id: str, outcomes: frozenset[str], start: int,
                             limit: int) -> list[tuple[int, bytes]]:
        """``(index, record as JSON)`` of the job's records whose outcome is one of ``outcomes``
        and whose body was kept (a failed result's last field), from record index ``start`` on,
        in order."""
        stored = await self._stored_results(job_id, start, limit, outcomes & _UNSUCCESSFUL, _kept)
        return [(result[RESULT_INDEX], orjson.dumps(result[RESULT_RECORD])) for result, _ in stored]

    async def batches(self, job_id: str) -> list[dict[str, Any]]:
        """The job's applied batches whose results are stored, in the order they were applied."""
        rows = await self._all(
            "SELECT seq, records, at, host, counts FROM job_batches WHERE job_id = ? ORDER BY at, seq", (job_id,)
        )
        return [{"seq": row["seq"], "records": row["records"], "at": row["at"], "host": row["host"],
                 "counts": orjson.loads(row["counts"]) if row["counts"] else {}} for row in rows]

    async def matching_objects(self, tenant: str, object_type: str, conditions: list[tuple[str, bool, Any]],
                               limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the tenant's objects of a type, by external id, meeting every condition
        ``(field, equal, value)``: the field (``id``, ``external_id`` or an attribute) is
        ``value``, or, with ``equal`` false, is not (a missing attribute is not anything)."""
        where, params = "tenant = ? AND type = ?", [tenant, object_type]
        for field, equal, value in conditions:
            column = _attribute(field)
            if column.startswith("json_extract"):
                params.append(field)
            if isinstance(value, str):  # a filter from a query string matches numbers by their text
                column = f"CAST({column} AS TEXT)"
            where += f" AND {column} {'IS' if equal else 'IS NOT'} ?"
            params.append(value)
        rows = await self._all(
            f"SELECT * FROM objects WHERE {where} ORDER BY external_id, id LIMIT ? OFFSET ?", (*params, limit, offset)
        )
        counted = await self._all(f"SELECT count(*) FROM objects WHERE {where}", tuple(params))
        return [_object(row) for row in rows], int(counted[0][0])

    async def object(self, tenant: str, object_id: str) -> dict[str, Any] | None:
        row = await self._one("objects", "*", tenant, object_id)
        return _object(row) if row else None

    async def objects(self, tenant: str, object_type: str | None, external_id: str | None, paging: Paging) -> Page:
        rows, total, more, last_key = await self._tenant_page(
            "objects", tenant, {"type": object_type, "external_id": external_id}, OBJECT_ORDER, paging)
        return Page([_object(row) for row in rows], total, more, last_key)

    async def relationship(self, tenant: str, rel_id: str) -> dict[str, Any] | None:
        row = await self._one("relationships", "*", tenant, rel_id)
        return _relationship(row) if row else None

    async def relationships(self, tenant: str, relationship_type: str | None, paging: Paging) -> Page:
        rows, total, more, last_key = await self._tenant_page(
            "relationships", tenant, {"relationship_type": relationship_type}, RELATIONSHIP_ORDER, paging)
        return Page([_relationship(row) for row in rows], total, more, last_key)

    async def files(self, tenant: str, paging: Paging, *, job_id: str | None = None, name: str | None = None,
                    job_title: str | None = None, file_type: str | None = None, created_from: str | None = None,
                    created_to: str | None = None, newest_first: bool = True) -> Page:
        """A page of the tenant's export files: of one job; whose name or job title contains
        the text given; of a type (format); created in [``created_from``, ``created_to``)."""
        where, params = ["tenant = ?"], [tenant]
        for condition, value in (("job_id = ?", job_id), ("name LIKE ? ESCAPE '\\'", name and _like(name)),
                                 ("job_title LIKE ? ESCAPE '\\'", job_title and _like(job_title)),
                                 ("type = ?", file_type), ("created_at >= ?", created_from),
                                 ("created_at < ?", created_to)):
            if value:
                where.append(condition)
                params.append(value)
        order = [(expression, newest_first) for expression in _FILE_ORDER]
        rows, total, more, last_key = await self._page("files", where, params, order, paging)
        return Page([_file(row) for row in rows], total, more, last_key)

    async def files_named(self, tenant: str, names: list[str]) -> list[dict[str, Any]]:
        """The tenant's files among ``names`` (another tenant's are not found); keep ``names``
        short (the API takes at most 100): each is a parameter of one statement."""
        rows = await self._all(f"SELECT * FROM files WHERE tenant = ? AND name IN ({', '.join('?' * len(names))})",
                               (tenant, *names))
        return [_file(row) for row in rows]

    async def workers(self, seen_since: str) -> list[dict[str, Any]]:
        """Workers whose last heartbeat is at or after ``seen_since``, with the partitions they hold."""
        rows = await self._all("SELECT * FROM workers WHERE at >= ? ORDER BY worker", (seen_since,))
        return [{"worker": row["worker"], "host": row["host"], "pid": row["pid"], "seen_at": row["at"],
                 "partitions": orjson.loads(row["partitions"])} for row in rows]
