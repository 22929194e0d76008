"""A job's life after it is accepted: suspend, resume, cancel, update and delete; the runs of a
scheduled definition and the history of every execution; the statuses and the version.

Each command is checked against the job state machine's table (``domain.jobs.ALLOWED``) on
the job as the view shows it, answered 409 with the current status when not allowed, and
otherwise published for the job tracker, which applies it (and checks again).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

import bulkjobs
from bulkjobs.api.common import FILES, PUBLISHER, READER, find_job, json_response, paging
from bulkjobs.api.decoding import read_all
from bulkjobs.clock import parse_time, utc_now
from bulkjobs.domain.exports import parse_export
from bulkjobs.domain.jobs import EXPORT, LABELS, STATUSES, TERMINAL, allowed
from bulkjobs.domain.limits import check_description
from bulkjobs.domain.schedules import check_schedule
from bulkjobs.errors import BadRequest, BulkJobsError, Conflict, InvalidJson, NotFound
from bulkjobs.store.reader import JOB_SORTS

UPDATE_FIELDS = ("description", "schedule", "params", "suspended")


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


async def _command(request: web.Request, command: str) -> web.Response:
    job = await find_job(request)
    check(job, command)
    await request.app[PUBLISHER].command(job["id"], request["tenant"], command)
    return json_response(job, 202)


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
    unknown = sorted(set(body) - set(UPDATE_FIELDS))
    if unknown:
        raise BadRequest(f"{unknown[0]!r} cannot be updated: only " + ", ".join(UPDATE_FIELDS), field=unknown[0])
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
            raise BadRequest("'suspended' must be true or false", field="suspended")
        changes["suspended"] = body["suspended"]
    return changes


def job_details(job: dict[str, Any]) -> dict[str, Any]:
    """An export job's details as its body shows them (the keys ``ExportRequest.details`` makes)."""
    return {key: job[key] for key in ("title", "source", "object_type", "time_frame", "params") if key in job}


async def update_job(request: web.Request) -> web.Response:
    """``PUT /v1/jobs/{id}``: change a job that has not started (description, schedule, an
    export's params, suspended)."""
    job = await find_job(request)
    body = await _json_object(request)
    check(job, "update")
    changes = _changes(job, body)
    await request.app[PUBLISHER].command(job["id"], request["tenant"], "update", changes=changes)
    return json_response({**job, **{k: v for k, v in changes.items() if k in ("description", "schedule")}}, 202)


def _ids(request: web.Request, name: str) -> list[str]:
    ids = [part.strip() for part in request.query.get(name, "").split(",") if part.strip()]
    if not ids:
        raise BadRequest(f"'{name}' must list one or more ids, separated by commas", field=name)
    return list(dict.fromkeys(ids))


async def _found(request: web.Request, ids: list[str]) -> list[dict[str, Any]]:
    """The tenant's jobs with these ids; 404 listing the missing ones if any is not found."""
    found: list[dict[str, Any]] = []
    missing: list[str] = []
    for job_id in ids:
        job = await request.app[READER].job(request["tenant"], job_id)
        if job is None:
            missing.append(job_id)
        else:
            found.append(job)
    if missing:
        raise NotFound(f"{len(missing)} of the jobs were not found", missing=missing)
    return found


async def _delete(request: web.Request, jobs: list[dict[str, Any]], running: type[BulkJobsError]) -> web.Response:
    """Delete jobs that have all ended (their results and files go too); ``running`` is the
    error for any that has not, and then nothing is deleted."""
    busy = [job for job in jobs if job["status"] not in TERMINAL]
    if busy:
        raise running(f"{len(busy)} of the jobs have not ended: cancel them first",
                      running={job["id"]: job["status"] for job in busy})
    for job in jobs:
        await request.app[PUBLISHER].command(job["id"], request["tenant"], "delete")
        request.app[FILES].remove(job["id"])
    return web.Response(status=204)


async def delete_job(request: web.Request) -> web.Response:
    job = await find_job(request)
    check(job, "delete")
    return await _delete(request, [job], Conflict)


async def delete_jobs(request: web.Request) -> web.Response:
    """``DELETE /v1/jobs?ids=a,b``: every job must exist (404 lists the missing) and have ended (409)."""
    return await _delete(request, await _found(request, _ids(request, "ids")), Conflict)


def _query(request: web.Request) -> dict[str, Any]:
    """Status, sort, order and paging of a job list."""
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"unknown status {status!r}: one of " + ", ".join(STATUSES), field="status")
    sort = request.query.get("sort") or "created_at"
    if sort not in JOB_SORTS:
        raise BadRequest(f"unknown sort field {sort!r}: one of " + ", ".join(JOB_SORTS), field="sort")
    order = request.query.get("order") or ("desc" if sort.endswith("_at") else "asc")
    if order not in ("asc", "desc"):
        raise BadRequest(f"'order' must be asc or desc, not {order!r}", field="order")
    limit, offset = paging(request)
    return {"status": status, "sort": sort, "descending": order == "desc", "limit": limit, "offset": offset}


async def list_jobs(request: web.Request) -> web.Response:
    items, total = await request.app[READER].jobs(request["tenant"], search=request.query.get("q") or None,
                                                  **_query(request))
    return json_response({"items": items, "total": total})


async def job_runs(request: web.Request) -> web.Response:
    """``GET /v1/jobs/{id}/runs``: the runs a scheduled definition has made."""
    job = await find_job(request)
    items, total = await request.app[READER].jobs(request["tenant"], parent_id=job["id"], **_query(request))
    return json_response({"items": items, "total": total})


async def history(request: web.Request) -> web.Response:
    """``GET /v1/history``: every execution of the tenant (one-off jobs and runs; ``job_id``
    keeps one definition's runs)."""
    items, total = await request.app[READER].jobs(
        request["tenant"], parent_id=request.query.get("job_id") or None, executions_only=True, **_query(request))
    return json_response({"items": items, "total": total})


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
