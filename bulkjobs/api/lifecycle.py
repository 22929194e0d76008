"""A job's life after it is accepted: suspend, resume, cancel, update and delete; the runs of a
scheduled definition and the history of every execution; the statuses and the version.

Each command is checked against the job state machine's table (``domain.jobs.ALLOWED``) on
the job as the view shows it, answered 409 with the current status when not allowed, and
otherwise published for the job tracker, which applies it (and checks again). The answer waits
until the view shows the outcome (``common.until_shown``), so that the next read, through any
API process, shows what the answer said: 200 with the job (204 for a delete) once it does, 409
if the tracker refused the command because the job changed meanwhile (it ended before a cancel
reached it), 202 if the view does not show it within ``VIEW_WAIT``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

import bulkjobs
from bulkjobs.api.common import (
    PAGING,
    PUBLISHER,
    READER,
    UPLOADS,
    answer_deleted,
    find_job,
    job_of,
    json_response,
    page_of,
    page_response,
    takes_query,
    until_shown,
)
from bulkjobs.api.decoding import read_all
from bulkjobs.clock import parse_time, utc_now
from bulkjobs.domain.exports import parse_export
from bulkjobs.domain.jobs import (
    CANCELLED,
    EXPORT,
    HOLD,
    LABELS,
    STATUSES,
    STOP,
    SUSPENDED,
    TERMINAL,
    allowed,
    notice,
)
from bulkjobs.domain.limits import check_description
from bulkjobs.domain.schedules import check_schedule
from bulkjobs.errors import BadRequest, BulkJobsError, Conflict, InvalidField, InvalidJson, NotFound, check_known
from bulkjobs.kafka.topics import COMMAND_NOTICE
from bulkjobs.store.reader import JOB_SORTS

UPDATE_FIELDS = ("description", "schedule", "params", "suspended")
MAX_IDS = 100  # jobs in one request
LIST_QUERY = ("status", "sort", "order", *PAGING)  # what every job list takes (see _query)

# Whether the job as the view shows it, once the command can no longer be sent to it, got
# there by the command (otherwise the tracker refused it: the job had changed meanwhile).
APPLIED: dict[str, Callable[[dict[str, Any]], bool]] = {
    "cancel": lambda job: job["status"] == CANCELLED,
    "suspend": lambda job: job["status"] == SUSPENDED,
    "resume": lambda job: job["status"] not in (SUSPENDED, CANCELLED),
}


def started(job: dict[str, Any]) -> bool:
    """Whether a job (as the view shows it) has begun: applied records, or a definition fired."""
    return job["started_at"] is not None or bool(job.get("runs"))


def check(job: dict[str, Any], command: str) -> None:
    if allowed(job["status"], started(job), command):
        return
    if job["status"] in TERMINAL:
        state = f"has ended ({job['status']})"
    else:
        state = f"is {job['status']}" + (" and has started" if command == "update" and started(job) else "")
    raise Conflict(f"job {job['id']!r} {state}: it cannot be sent '{command}'", status=job["status"])


def _sendable(job: dict[str, Any], command: str) -> bool:
    return allowed(job["status"], started(job), command)


async def _answer(request: web.Request, job: dict[str, Any], command: str,
                  applied: Callable[[dict[str, Any]], bool]) -> web.Response:
    """The answer to a published command, once the view shows the job ``applied`` or no
    longer open to the command: 200 with the job as the view shows it, or 409 if the command
    was refused; 202 with the job as it was if the view shows neither within ``VIEW_WAIT``."""
    reader, tenant = request.app[READER], request["tenant"]

    async def settled() -> dict[str, Any] | None:
        shown = await reader.job(tenant, job["id"])
        return shown if shown is not None and (applied(shown) or not _sendable(shown, command)) else None

    shown = await until_shown(settled)
    if shown is None:
        return json_response(job, 202)
    if not applied(shown):
        check(shown, command)
    return json_response(shown)


async def _command(request: web.Request, command: str) -> web.Response:
    job = await find_job(request)
    check(job, command)
    loop = asyncio.get_running_loop()
    await request.app[PUBLISHER].command(job["id"], request["tenant"], command)
    written = loop.time()
    answer = await _answer(request, job, command, APPLIED[command])
    if notice(command) in (STOP, HOLD):  # every batch applier knows it by then (topics.COMMAND_NOTICE)
        await asyncio.sleep(max(0.0, written + COMMAND_NOTICE - loop.time()))
    return answer


async def suspend_job(request: web.Request) -> web.Response:
    return await _command(request, "suspend")


async def resume_job(request: web.Request) -> web.Response:
    return await _command(request, "resume")


async def cancel_job(request: web.Request) -> web.Response:
    return await _command(request, "cancel")


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await read_all(request))
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _changes(job: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The tracker's ``update`` changes for a PUT body; 400 for what cannot change."""
    check_known(body, UPDATE_FIELDS)
    changes: dict[str, Any] = {}
    if "description" in body:
        changes["description"] = check_description(body["description"])
    if "schedule" in body:
        if not job.get("schedule"):
            raise BadRequest("only a scheduled job's schedule can change", field="schedule")
        changes["schedule"] = check_schedule(body["schedule"], parse_time(utc_now()))
    if "params" in body:
        if job["type"] != EXPORT:
            raise BadRequest("only an export has params", field="params")
        fields = {"title": job["title"], "source": job["source"], "object_type": job["object_type"],
                  "time_frame": job["time_frame"], "description": changes.get("description", job["description"]),
                  "params": body["params"]}
        changes["details"] = {**job_details(job), **parse_export(fields).details()}
    if "suspended" in body:
        if not isinstance(body["suspended"], bool):
            raise InvalidField("'suspended' must be true or false", field="suspended")
        changes["suspended"] = body["suspended"]
    return changes


def _shows(job: dict[str, Any], changes: dict[str, Any]) -> bool:
    """Whether the job as the view shows it has the ``update`` changes."""
    if "suspended" in changes and (job["status"] == SUSPENDED) != changes["suspended"]:
        return False
    details = changes.get("details") or {}
    return (all(job.get(name) == changes[name] for name in ("description", "schedule") if name in changes)
            and all(job.get(name) == value for name, value in details.items()))


def job_details(job: dict[str, Any]) -> dict[str, Any]:
    """An export job's details as its body shows them (the keys ``ExportRequest.details`` makes, and
    its ``callback``)."""
    return {key: job[key] for key in ("title", "source", "object_type", "time_frame", "params", "callback")
            if key in job}


async def update_job(request: web.Request) -> web.Response:
    """``PUT /v1/jobs/{id}``: change a job that has not started (description, schedule, an
    export's params, suspended)."""
    job = await find_job(request)
    body = await _json_object(request)
    check(job, "update")
    changes = _changes(job, body)
    await request.app[PUBLISHER].command(job["id"], request["tenant"], "update", changes=changes)
    return await _answer(request, job, "update", lambda shown: _shows(shown, changes))


def _ids(request: web.Request, name: str) -> list[str]:
    ids = list(dict.fromkeys(part.strip() for part in request.query.get(name, "").split(",") if part.strip()))
    if not ids:
        raise BadRequest(f"'{name}' must list one or more ids, separated by commas", field=name)
    if len(ids) > MAX_IDS:
        raise BadRequest(f"at most {MAX_IDS} jobs can be deleted at once", field=name)
    return ids


async def _found(request: web.Request, ids: list[str]) -> list[dict[str, Any]]:
    """The tenant's jobs with these ids; 404 listing the missing ones if any is not found."""
    found: list[dict[str, Any]] = []
    missing: list[str] = []
    for job_id in ids:
        job = await job_of(request, job_id)
        if job is None:
            missing.append(job_id)
        else:
            found.append(job)
    if missing:
        raise NotFound(f"{len(missing)} of the jobs were not found", missing=missing)
    return found


async def _delete(request: web.Request, jobs: list[dict[str, Any]], running: type[BulkJobsError]) -> web.Response:
    """Delete jobs that have all ended (their results and files go too); ``running`` is the
    error for any that has not, and then nothing is deleted. 204 once the view shows none of
    them; 202 listing those it still shows (``pending``) if it does not within ``VIEW_WAIT``."""
    busy = [job for job in jobs if job["status"] not in TERMINAL]
    if busy:
        raise running(f"{len(busy)} of the jobs have not ended: cancel them first",
                      running={job["id"]: job["status"] for job in busy})
    tenant, ids = request["tenant"], [job["id"] for job in jobs]
    await asyncio.gather(*(request.app[PUBLISHER].command(job_id, tenant, "delete") for job_id in ids))
    for job_id in ids:
        request.app[UPLOADS].remove(job_id)
    return await answer_deleted(request.app[READER].job_ids, tenant, ids)


async def delete_job(request: web.Request) -> web.Response:
    job = await find_job(request)
    check(job, "delete")
    return await _delete(request, [job], Conflict)


@takes_query("ids")
async def delete_jobs(request: web.Request) -> web.Response:
    """``DELETE /v1/jobs?ids=a,b``: every job must exist (404 lists the missing) and have ended (409)."""
    return await _delete(request, await _found(request, _ids(request, "ids")), Conflict)


def _query(request: web.Request) -> dict[str, Any]:
    """Status, sort and order of a job list."""
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"unknown status {status!r}: one of " + ", ".join(STATUSES), field="status")
    sort = request.query.get("sort") or "created_at"
    if sort not in JOB_SORTS:
        raise BadRequest(f"unknown sort field {sort!r}: one of " + ", ".join(JOB_SORTS), field="sort")
    order = request.query.get("order") or ("desc" if sort.endswith("_at") else "asc")
    if order not in ("asc", "desc"):
        raise BadRequest(f"'order' must be asc or desc, not {order!r}", field="order")
    return {"status": status, "sort": sort, "descending": order == "desc"}


async def _job_list(request: web.Request, **filters: Any) -> web.Response:
    """A page of the tenant's jobs that ``filters`` keep, as the query string sorts and pages them."""
    query, paging = _query(request), page_of(request)
    page = await request.app[READER].job_page(request["tenant"], paging, **query, **filters)
    return page_response(request, paging, page)


@takes_query("q", *LIST_QUERY)
async def list_jobs(request: web.Request) -> web.Response:
    return await _job_list(request, search=request.query.get("q") or None)


@takes_query(*LIST_QUERY)
async def job_runs(request: web.Request) -> web.Response:
    """``GET /v1/jobs/{id}/runs``: the runs a scheduled definition has made."""
    job = await find_job(request)
    return await _job_list(request, parent_id=job["id"])


@takes_query("job_id", *LIST_QUERY)
async def history(request: web.Request) -> web.Response:
    """``GET /v1/history``: every execution of the tenant (one-off jobs and runs; ``job_id``
    keeps one definition's runs)."""
    return await _job_list(request, parent_id=request.query.get("job_id") or None, executions_only=True)


async def _execution(request: web.Request) -> dict[str, Any]:
    job = await find_job(request)
    if job.get("schedule"):
        raise NotFound(f"{job['id']!r} is a scheduled definition, not a run: see /v1/jobs/{job['id']}/runs")
    return job


async def history_item(request: web.Request) -> web.Response:
    return json_response(await _execution(request))


async def history_progress(request: web.Request) -> web.Response:
    job = await _execution(request)
    return json_response({key: job[key] for key in ("id", "status", "progress", "counts", "started_at",
                                                     "completed_at", "updated_at")})


async def delete_history_item(request: web.Request) -> web.Response:
    return await _delete(request, [await _execution(request)], BadRequest)


@takes_query("ids")
async def delete_history(request: web.Request) -> web.Response:
    """``DELETE /v1/history?ids=a,b``: 404 lists the missing; 400 if any is still running."""
    return await _delete(request, await _found(request, _ids(request, "ids")), BadRequest)


async def job_statuses(request: web.Request) -> web.Response:
    return json_response({"items": [{"name": status, "label": LABELS[status], "terminal": status in TERMINAL}
                                    for status in STATUSES]})


def _commit() -> str:
    """The git commit the code runs from (``BULKJOBS_COMMIT`` wins, e.g. in an image)."""
    if os.environ.get("BULKJOBS_COMMIT"):
        return os.environ["BULKJOBS_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(bulkjobs.__file__).parent, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


VERSION = {"version": bulkjobs.__version__, "build": os.environ.get("BULKJOBS_BUILD", "dev"), "commit": _commit()}


async def version(request: web.Request) -> web.Response:
    return json_response(VERSION)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_delete("/v1/jobs", delete_jobs)
    app.router.add_put("/v1/jobs/{job_id}", update_job)
    app.router.add_delete("/v1/jobs/{job_id}", delete_job)
    app.router.add_post("/v1/jobs/{job_id}/cancel", cancel_job)
    app.router.add_post("/v1/jobs/{job_id}/suspend", suspend_job)
    app.router.add_post("/v1/jobs/{job_id}/resume", resume_job)
    app.router.add_get("/v1/jobs/{job_id}/runs", job_runs)
    app.router.add_get("/v1/history", history)
    app.router.add_delete("/v1/history", delete_history)
    app.router.add_get("/v1/history/{job_id}", history_item)
    app.router.add_delete("/v1/history/{job_id}", delete_history_item)
    app.router.add_get("/v1/history/{job_id}/progress", history_progress)
    app.router.add_get("/v1/job-statuses", job_statuses)
    app.router.add_get("/v1/version", version)
