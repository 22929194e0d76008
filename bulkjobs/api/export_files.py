"""The files export jobs write: list them (a job's, or all of a tenant's with filters), download
one, delete some.

A file is listed once its export has succeeded and the store has written that status. A
delete sends a ``delete_files`` command to each job concerned and answers once the view lists
none of the files (the store removes them from disk as it applies the job's next status).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from aiohttp import web

from bulkjobs.api.common import (
    PAGING,
    PUBLISHER,
    READER,
    SETTINGS,
    answer_deleted,
    attachment,
    find_job,
    page_of,
    page_response,
    takes_query,
)
from bulkjobs.domain.exports import CONTENT_TYPES, FORMATS, parse_instant
from bulkjobs.errors import BadRequest, NotFound
from bulkjobs.store.files import ExportFiles

MAX_NAMES = 100  # names in one request, as the seed API allows


@takes_query(*PAGING)
async def job_files(request: web.Request) -> web.Response:
    """A job's files in the order it wrote them."""
    job = await find_job(request)
    paging = page_of(request)
    page = await request.app[READER].files(request["tenant"], paging, job_id=job["id"], newest_first=False)
    return page_response(request, paging, page)


def _instant(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    return parse_instant(value, name) if value else None


@takes_query("name", "job_title", "type", "created_from", "created_to", *PAGING)
async def list_files(request: web.Request) -> web.Response:
    """The tenant's files, newest first: ``name`` and ``job_title`` match within, ``type`` is
    a format, ``created_from`` and ``created_to`` bound the creation time (from inclusive)."""
    file_type = request.query.get("type") or None
    if file_type is not None and file_type not in FORMATS:
        raise BadRequest(f"unknown type {file_type!r}: one of " + ", ".join(FORMATS), field="type")
    created_from, created_to = _instant(request, "created_from"), _instant(request, "created_to")
    paging = page_of(request)
    page = await request.app[READER].files(
        request["tenant"], paging, name=request.query.get("name") or None,
        job_title=request.query.get("job_title") or None, file_type=file_type, created_from=created_from,
        created_to=created_to,
    )
    return page_response(request, paging, page)


async def _found(request: web.Request, names: list[str]) -> list[dict[str, Any]]:
    """The tenant's files of these names; 404 listing the names not found (another tenant's
    file is not found either)."""
    found = await request.app[READER].files_named(request["tenant"], names)
    known = {file["name"] for file in found}
    missing = [name for name in names if name not in known]
    if missing:
        raise NotFound(f"{len(missing)} of the files were not found: " + ", ".join(missing), missing=missing)
    return found


async def download(request: web.Request) -> web.StreamResponse:
    """One file as the export wrote it, streamed from disk."""
    [file] = await _found(request, [request.match_info["name"]])
    path = ExportFiles(request.app[SETTINGS].data_dir).path(file["job_id"], file["name"])
    if not path.is_file():  # being deleted: listed until the store has applied the deletion
        raise NotFound(f"file {file['name']!r} not found", missing=[file["name"]])
    headers = {"Content-Type": CONTENT_TYPES[file["type"]], **attachment(file["name"])}
    return web.FileResponse(path, headers=headers)


async def _delete(request: web.Request, names: list[str]) -> web.Response:
    """Delete all the files named, or none of them if any is not found."""
    by_job: dict[str, list[str]] = defaultdict(list)
    for file in await _found(request, names):
        by_job[file["job_id"]].append(file["name"])
    publisher, tenant = request.app[PUBLISHER], request["tenant"]
    await asyncio.gather(*(publisher.command(job_id, tenant, "delete_files", changes={"names": job_names})
                           for job_id, job_names in by_job.items()))

    async def shown(tenant: str, names: list[str]) -> set[str]:
        return {file["name"] for file in await request.app[READER].files_named(tenant, names)}

    return await answer_deleted(shown, tenant, names)


async def delete_file(request: web.Request) -> web.Response:
    return await _delete(request, [request.match_info["name"]])


@takes_query("names")
async def delete_files(request: web.Request) -> web.Response:
    """``?names=a,b``: the files named, comma-separated."""
    names = list(dict.fromkeys(name.strip() for name in request.query.get("names", "").split(",") if name.strip()))
    if not names:
        raise BadRequest("'names' is required: file names separated by commas", field="names")
    if len(names) > MAX_NAMES:
        raise BadRequest(f"at most {MAX_NAMES} files can be deleted at once", field="names")
    return await _delete(request, names)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/jobs/{job_id}/files", job_files)
    app.router.add_get("/v1/files", list_files)
    app.router.add_delete("/v1/files", delete_files)
    app.router.add_get("/v1/files/{name}", download)
    app.router.add_delete("/v1/files/{name}", delete_file)
