"""Files a client downloads: a CSV job's original file, its results as CSV, any job's results
as JSON lines, a job's log, and the job types with their CSV templates.

Everything that can be large is streamed: rows are read from disk and the view a page at a
time, never gathered in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from bulkjobs.api.common import (
    READER,
    UPLOADS,
    attachment,
    compress,
    find_job,
    json_response,
    outcome_of,
    page_links,
    paging,
    takes_query,
)
from bulkjobs.domain.csv_files import RowReader, write_rows
from bulkjobs.domain.csv_import import parse_filter, template_rows
from bulkjobs.domain.job_types import JOB_TYPES, JobType
from bulkjobs.errors import BadRequest, NotFound
from bulkjobs.store.files import UploadFiles
from bulkjobs.store.reader import ViewReader

# The outcome columns come first, so they sit under their headers whatever the row's width
# (a row with fewer or more cells than the header is skipped, and written as it was sent).
RESULT_COLUMNS = ["_status", "_id", "_error"]
SOURCE_COLUMN = "_source_index"  # a retry's: the row's record index in the job retried (after _error)
# A result's outcome as results.csv names it (Zoho's words for a created row: "added").
CSV_STATUS = {"created": "added", "updated": "updated", "deleted": "deleted", "skipped": "skipped", "failed": "failed"}
PENDING = "pending"  # a row not applied yet
RESULTS_PAGE = 5000
TEMPLATE_PAGE = 12_000  # Cisco's page of a prefilled template


async def _csv_job(request: web.Request) -> dict[str, Any]:
    job = await find_job(request)
    if not job.get("file") or not request.app[UPLOADS].exists(job["id"]):
        raise NotFound(f"job {job['id']!r} has no file: it was not submitted as CSV")
    return job


async def original_file(request: web.Request) -> web.StreamResponse:
    """The CSV exactly as it was uploaded."""
    job = await _csv_job(request)
    headers = {"Content-Type": "text/csv", **attachment(job["file"]["name"] or f"{job['id']}.csv")}
    return web.FileResponse(request.app[UPLOADS].path(job["id"]), headers=headers)


async def _rows(files: UploadFiles, job_id: str, encoding: str) -> AsyncIterator[list[list[str]]]:
    """The rows of a job's file, a chunk at a time, each chunk read and parsed in a thread."""
    reader = RowReader(encoding)
    chunks = files.chunks(job_id)
    finished = False

    def next_rows() -> list[list[str]]:
        nonlocal finished
        data = next(chunks, None)
        if data is None:
            finished = True
            return reader.finish()
        return reader.feed(data)

    while not finished:
        yield await asyncio.to_thread(next_rows)


class _Results:
    """A job's results by record index, fetched from the view a page at a time, in order."""

    def __init__(self, reader: ViewReader, job_id: str) -> None:
        self.reader, self.job_id = reader, job_id
        self.page: dict[int, dict[str, Any]] = {}
        self.next_index = 0  # every result below it has been fetched

    async def get(self, index: int) -> dict[str, Any] | None:
        if index >= self.next_index:
            items = await self.reader.results(self.job_id, RESULTS_PAGE, index)
            self.page = {item["index"]: item for item in items}
            self.next_index = items[-1]["index"] + 1 if len(items) == RESULTS_PAGE else 2**62
        return self.page.get(index)


def _result_cells(result: dict[str, Any] | None) -> list[str]:
    if result is None:
        return [PENDING, "", ""]
    errors = "; ".join(f"{error['code']}: {error['detail']}" for error in result["errors"])
    return [CSV_STATUS.get(result["status"], result["status"] or ""), result["id"] or "", errors]


def _source_cell(result: dict[str, Any] | None) -> str:
    """A retry's row's index in the job retried (empty while the row is pending)."""
    return "" if result is None or result["source_index"] is None else str(result["source_index"])


def _csv_bytes(rows: list[list[str]]) -> bytes:
    """Rows as UTF-8 CSV; called in a thread, as a page of rows takes milliseconds to write."""
    return write_rows(rows).encode()


async def results_csv(request: web.Request) -> web.StreamResponse:
    """The uploaded rows, in order: ``_status``, ``_id`` and ``_error`` (and a retry's
    ``_source_index``), then the columns sent."""
    job = await _csv_job(request)
    retry = job.get("retry_of") is not None
    response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                           **attachment(f"{job['id']}-results.csv")})
    compress(request, response)
    await response.prepare(request)
    results = _Results(request.app[READER], job["id"])
    index = -1  # the header comes first
    async for rows in _rows(request.app[UPLOADS], job["id"], job["file"]["character_encoding"]):
        out = []
        for row in rows:
            if index < 0:
                out.append(RESULT_COLUMNS + [SOURCE_COLUMN] * retry + row)
            else:
                result = await results.get(index)
                out.append(_result_cells(result) + [_source_cell(result)] * retry + row)
            index += 1
        if out:
            await response.write(await asyncio.to_thread(_csv_bytes, out))
    await response.write_eof()
    return response


def _ndjson_bytes(items: list[dict[str, Any]]) -> bytes:
    """Results as JSON lines; called in a thread, as a page of results takes milliseconds to write."""
    return b"".join(orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE) for item in items)


@takes_query("outcome")
async def results_ndjson(request: web.Request) -> web.StreamResponse:
    """Every result of any job (of one ``outcome``, if given), in record order, one JSON object
    per line shaped as the results list's items, read from the view a page at a time."""
    job, outcome = await find_job(request), outcome_of(request)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                           **attachment(f"{job['id']}-results.ndjson")})
    compress(request, response)
    await response.prepare(request)
    reader, after = request.app[READER], 0
    while items := await reader.results(job["id"], RESULTS_PAGE, after, outcome=outcome):
        await response.write(await asyncio.to_thread(_ndjson_bytes, items))
        after = items[-1]["index"] + 1
    await response.write_eof()
    return response


def _counts_text(counts: dict[str, int], csv: bool) -> str:
    created = "added" if csv else "created"
    return (f"{counts['created']} {created}, {counts['updated']} updated, {counts['deleted']} deleted, "
            f"{counts['skipped']} skipped, {counts['failed']} failed")


def log_head(job: dict[str, Any], batches: list[dict[str, Any]]) -> list[str]:
    """The log's lines up to the job's end: accepted, started, one per batch, finished."""
    csv = bool(job.get("file"))
    what = f"{job['type']}/{job['action']}"
    if csv:
        file = job["file"]
        what += (f", CSV job type {job['job_type']} ({job['operation']} {job['object_type']} by {job['find_by']}), "
                 f"file {file['name'] or '(unnamed)'}: {file['size']} bytes, {file['character_encoding']}, "
                 f"{file['rows']} rows")
    if job.get("dry_run"):
        what += ", a dry run: it changes nothing"
    lines = [f"{job['created_at']}  accepted  job {job['id']}: {what}; {job['counts']['total']} records"]
    if job["description"]:
        lines.append(f"{job['created_at']}  accepted  description: {job['description']}")
    if job["started_at"]:
        lines.append(f"{job['started_at']}  started   on host {job['host'] or 'unknown'}")
    for batch in batches:
        counts = {"created": 0, "updated": 0, "deleted": 0, "skipped": 0, "failed": 0, **batch["counts"]}
        lines.append(f"{batch['at']}  batch {batch['seq']}  {batch['records']} records on host "
                     f"{batch['host'] or 'unknown'}: {_counts_text(counts, csv)}")
    if job["completed_at"]:
        counts = job["counts"]
        lines.append(f"{job['completed_at']}  finished  {job['status']}: {counts['processed']} of {counts['total']} "
                     f"records processed: {_counts_text(counts, csv)}")
        if job["error"]:
            lines.append(f"{job['completed_at']}  finished  error {job['error']['code']}: {job['error']['message']}")
    return lines


def problem_line(result: dict[str, Any]) -> str:
    reasons = "; ".join(f"{error['code']}: {error['detail']}" for error in result["errors"])
    return f"  record {result['index']} {result['status'] or 'failed'}: {reasons}"


async def job_log(request: web.Request) -> web.StreamResponse:
    """A plain-text log of the job: what was accepted, where and when it ran, every record that
    was skipped or failed and why, and how it ended."""
    job = await find_job(request)
    reader = request.app[READER]
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    compress(request, response)
    await response.prepare(request)
    head = log_head(job, await reader.batches(job["id"]))
    await response.write(("\n".join(head) + "\n").encode())
    problems = job["counts"]["skipped"] + job["counts"]["failed"]
    if problems:
        await response.write(f"records skipped or failed ({problems}):\n".encode())
        after = 0
        while items := await reader.results(job["id"], RESULTS_PAGE, after, failed_only=True):
            await response.write(("\n".join(problem_line(item) for item in items) + "\n").encode())
            after = items[-1]["index"] + 1
    await response.write_eof()
    return response


def _job_type(request: web.Request) -> JobType:
    name = request.match_info["name"]
    job_type = JOB_TYPES.get(name)
    if job_type is None:
        raise NotFound(f"job type {name!r} not found: one of " + ", ".join(JOB_TYPES))
    return job_type


EXPORT_TYPE: dict[str, Any] = {
    "name": "export",
    "description": "Export objects or relationships to JSON lines or CSV files (POST /v1/jobs with kind export)",
    "operation": "export", "object_type": None, "key": None, "columns": [],
}


async def list_job_types(request: web.Request) -> web.Response:
    return json_response({"items": [job_type.to_dict() for job_type in JOB_TYPES.values()] + [EXPORT_TYPE]})


async def get_job_type(request: web.Request) -> web.Response:
    return json_response(_job_type(request).to_dict())


@takes_query("q", "object_type", "limit", "offset")  # a template pages by offset only
async def job_type_template(request: web.Request) -> web.Response:
    """The job type's CSV template, prefilled with the objects it applies to (filtered by
    ``q=field:value ...``), a page at a time; ``Link: <...>; rel="next"`` names the next page."""
    job_type = _job_type(request)
    object_type = job_type.object_type or request.query.get("object_type") or None
    conditions = [*job_type.template_conditions, *parse_filter(request.query.get("q"))]
    limit, offset = paging(request, default=TEMPLATE_PAGE, most=TEMPLATE_PAGE)
    objects: list[dict[str, Any]] = []
    total = 0
    if object_type is not None:
        objects, total = await request.app[READER].matching_objects(
            request["tenant"], object_type, conditions, limit, offset)
    elif request.query.get("q"):
        raise BadRequest(f"a filter needs an object_type for job type {job_type.name!r}", field="object_type")
    more = offset + len(objects) < total
    headers = {**page_links(request, total=total, offset=offset, limit=limit,
                            next_page={"offset": offset + len(objects)} if more else None),
               **attachment(f"{job_type.name}-template.csv")}
    body = await asyncio.to_thread(lambda: _csv_bytes(template_rows(job_type, objects)))  # 12,000 rows: 0.1 s
    return web.Response(body=body, headers=headers, content_type="text/csv", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/jobs/{job_id}/file", original_file)
    app.router.add_get("/v1/jobs/{job_id}/results.csv", results_csv)
    app.router.add_get("/v1/jobs/{job_id}/results.ndjson", results_ndjson)
    app.router.add_get("/v1/jobs/{job_id}/log", job_log)
    app.router.add_get("/v1/job-types", list_job_types)
    app.router.add_get("/v1/job-types/{name}", get_job_type)
    app.router.add_get("/v1/job-types/{name}/template", job_type_template)
